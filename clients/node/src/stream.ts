// A generate-content stream that survives a dropped connection: each event carries the service's
// id (`run_<hex>:<n>`); when the connection drops, the stream sends the same request again with
// `Last-Event-ID` (up to `maxResumes` times, with backoff) and goes on after the last event it saw,
// on the same run: one generation, one bill. It still ends with its terminal event or throws.

import { setTimeout as sleep } from "node:timers/promises";

import {
  ConnectionError, ProtocolError, RequestTimeoutError, ServiceError, ServiceUnavailableError, errorBody,
  serviceError,
} from "./errors.js";
import { type SseEvent, sequenceOf, sseEvents } from "./sse.js";
import { parseJson, type Attempt } from "./transport.js";
import type { DoneEvent, GenerateEvent } from "./types.js";

export interface ResumePolicy {
  /** Reconnects per stream after its connection dropped (0: a drop throws). */
  maxResumes: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RESUME: ResumePolicy = { maxResumes: 5, baseDelayMs: 250, maxDelayMs: 4_000 };

/** How a run stands (POST /v1/runs/{id}/cancel answers it). */
export interface RunStatus {
  id: string;
  object: "run";
  status: "running" | "completed" | "stopped" | "abandoned";
}

interface ErrorEvent { type: "error"; metadata: { status: number } }

/** Opens the stream's request; `lastEventId`: a reconnect, resuming after that event. */
export type Opener = (lastEventId?: string) => Promise<[Response, Attempt]>;

/** The events of one generate-content stream. Iterate it once. */
export class ContentStream implements AsyncIterable<GenerateEvent> {
  /** The X-Request-Id of the attempt that delivered the stream, once it started. */
  requestId: string | undefined;
  /** The run that generates it (the `X-LearnX-Run-Id` header), once the stream started. */
  runId: string | undefined;
  /** The terminal event, once the stream ended well. */
  done: DoneEvent | undefined;
  /** Reconnects made after dropped connections. */
  resumes = 0;
  private started = false;
  private lastId: string | undefined;
  private lastSeq = 0;

  constructor(private readonly open: Opener, private readonly policy: ResumePolicy = DEFAULT_RESUME,
              private readonly signal?: AbortSignal,
              private readonly cancel?: (runId: string) => Promise<RunStatus>) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<GenerateEvent> {
    if (this.started) throw new Error("a ContentStream can be iterated only once");
    this.started = true;
    let [response, attempt] = await this.open();
    for (;;) {
      this.requestId = attempt.requestId;
      this.runId = response.headers.get("x-learnx-run-id") ?? this.runId;
      let dropped: unknown;
      try {
        for await (const event of this.fresh(response, attempt)) {
          if (event.data === "[DONE]") return this.finish(attempt);
          const parsed = parseJson<GenerateEvent | ErrorEvent>(event.data, attempt.requestId);
          if (parsed.type === "error") {
            throw serviceError(parsed.metadata.status, errorBody(parsed, "error event"), attempt.requestId);
          }
          if (parsed.type === "done") this.done = parsed;
          yield parsed;
        }
        if (this.done) return; // the terminal event came; only [DONE] was cut
        dropped = new ProtocolError("the stream ended without its terminal event", attempt.requestId);
      } catch (error) {
        dropped = error;
      }
      if (!this.resumable(dropped)) throw dropped;
      [response, attempt] = await this.reconnect(dropped);
    }
  }

  /** Only the text: what the seed's stream yielded. */
  async *text(): AsyncGenerator<string> {
    for await (const event of this) {
      if (event.type !== "done" && event.type !== "fallback") yield event.content;
    }
  }

  /** Stop the run (its generation is cancelled): the stream then ends with a ConflictError
   * (`run_stopped`), and so does every later resume. */
  async stop(): Promise<RunStatus> {
    if (!this.runId || !this.cancel) throw new Error("the stream has not started");
    return this.cancel(this.runId);
  }

  /** The events not seen yet (a reconnect's may repeat none, but this makes sure). */
  private async *fresh(response: Response, attempt: Attempt): AsyncGenerator<SseEvent> {
    if (!response.body) {
      attempt.close();
      throw new ProtocolError("the stream has no body", attempt.requestId);
    }
    for await (const event of sseEvents(response.body, attempt)) {
      const seq = sequenceOf(event.id);
      if (seq !== undefined) {
        if (seq <= this.lastSeq) continue;
        [this.lastId, this.lastSeq] = [event.id, seq];
      }
      yield event;
    }
  }

  private finish(attempt: Attempt): void {
    if (!this.done) throw new ProtocolError("the stream ended without its terminal event", attempt.requestId);
  }

  /** A drop worth a reconnect: the connection failed, went silent or ended early, after an event
   * with an id, and not because the caller aborted. */
  private resumable(error: unknown): boolean {
    if (this.lastId === undefined || this.signal?.aborted) return false;
    if (error instanceof RequestTimeoutError) return error.phase !== "request";
    return error instanceof ConnectionError || error instanceof ProtocolError;
  }

  /** The same request again with Last-Event-ID, retried with backoff. Throws the drop's error
   * once the reconnects are spent or when the run can no longer be resumed (404, 410: its
   * events expired, or it was cancelled after its grace period); any other refusal as it is (a
   * stopped run's ConflictError). */
  private async reconnect(dropped: unknown): Promise<[Response, Attempt]> {
    let last = dropped;
    for (;;) {
      if (this.resumes >= this.policy.maxResumes) throw last;
      this.resumes += 1;
      const cap = Math.min(this.policy.maxDelayMs, this.policy.baseDelayMs * 2 ** (this.resumes - 1));
      await pause(cap * (0.5 + Math.random() / 2), this.signal);
      try {
        return await this.open(this.lastId);
      } catch (error) {
        const again = error instanceof ConnectionError || error instanceof RequestTimeoutError
          || error instanceof ServiceUnavailableError;
        if (this.signal?.aborted) throw error;
        if (error instanceof ServiceError && (error.status === 404 || error.status === 410)) throw dropped;
        if (!again) throw error;
        last = error;
      }
    }
  }
}

async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch (error) {
    throw signal?.aborted ? (signal.reason as unknown) : error;
  }
}


