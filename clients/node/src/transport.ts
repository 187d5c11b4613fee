// One HTTP exchange with the service: headers, time limits, retries, and error translation.

import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import {
  ConnectionError, LearnXError, ProtocolError, RateLimitError, RequestTimeoutError, ServiceError,
  ServiceUnavailableError, errorBody, serviceError,
  type TimeoutPhase,
} from "./errors.js";

export interface Timeouts {
  /** Until the response head, on routes that answer at once (health, readiness, usage). */
  connectMs: number;
  /** Streams: until the first event (the service sends its head with it). */
  firstEventMs: number;
  /** Streams: the longest silence between two events. */
  idleMs: number;
  /** The whole call, retries and their waits included. */
  requestMs: number;
}

export interface RetryPolicy {
  /** Retries after a 429, a 503 or a failed connection (never once a stream has delivered). */
  maxRetries: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** A Retry-After longer than this is not waited for: the error is thrown at once. */
  maxRetryAfterMs: number;
}

export interface RetryEvent {
  retry: number;
  delayMs: number;
  error: LearnXError;
  requestId: string;
}

export interface Settings {
  baseUrl: string;
  apiKey: string | undefined;
  headers: Record<string, string>;
  timeouts: Timeouts;
  retry: RetryPolicy;
  onRetry: ((event: RetryEvent) => void) | undefined;
  fetch: typeof fetch;
}

/** Per call: all optional. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Sent as X-Request-Id (the ledger's key); a retry sends `<id>-retry<n>`. Random by default. */
  requestId?: string;
  timeouts?: Partial<Timeouts>;
  maxRetries?: number;
  headers?: Record<string, string>;
}

export interface Call {
  method: "GET" | "POST" | "PUT" | "DELETE";
  path: string;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** Which limit bounds the wait for the response head. */
  head: Exclude<TimeoutPhase, "idle">;
  /** Answer with the body of these statuses instead of throwing (readiness: 503). */
  accept?: number[];
}

const MAX_TIMER_MS = 2 ** 31 - 1;
const LIMIT_OF = { connect: "connectMs", first_event: "firstEventMs", idle: "idleMs" } as const;

/** One try: its abort controller, the one time limit running, and the caller's deadline. */
export class Attempt {
  readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private readonly unlink: () => void;

  constructor(readonly requestId: string, private readonly deadline: number,
              private readonly timeouts: Timeouts, signal: AbortSignal | undefined) {
    const abort = () => this.controller.abort(signal?.reason);
    if (signal?.aborted) abort();
    signal?.addEventListener("abort", abort, { once: true });
    this.unlink = () => signal?.removeEventListener("abort", abort);
  }

  /** Start the limit of `phase` (replacing the one running); the deadline always applies. */
  arm(phase: TimeoutPhase): void {
    this.disarm();
    const left = this.deadline - Date.now();
    const limit = phase === "request" ? left : this.timeouts[LIMIT_OF[phase]];
    const [shown, ms] = limit < left ? [phase, limit] : ["request" as const, left];
    if (ms > MAX_TIMER_MS) return; // Infinity: no limit
    const shownMs = shown === "request" ? this.timeouts.requestMs : ms;
    this.timer = setTimeout(
      () => this.controller.abort(new RequestTimeoutError(shown, shownMs, this.requestId)),
      Math.max(ms, 0));
  }

  disarm(): void {
    clearTimeout(this.timer);
  }

  /** End the attempt: stop its timer and close its connection if still open. */
  close(): void {
    this.disarm();
    this.unlink();
    this.controller.abort();
  }

  /** What a failure of fetch or of reading the body means. */
  translate(error: unknown): unknown {
    const reason: unknown = this.controller.signal.reason;
    if (this.controller.signal.aborted && reason !== undefined) return reason;
    if (error instanceof LearnXError) return error;
    const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : "";
    return new ConnectionError(`connection to the AI service failed${cause}`, this.requestId, { cause: error });
  }
}

export class Transport {
  constructor(readonly settings: Settings) {}

  /** A JSON call, retried on 429/503/connection failures. */
  async json<T>(call: Call, options: CallOptions = {}): Promise<T> {
    return this.withRetries(options, async (attempt) => {
      try {
        const response = await this.send(call, attempt, options);
        attempt.arm("request");
        return parseJson<T>(await response.text(), attempt.requestId);
      } catch (error) {
        throw attempt.translate(error);
      } finally {
        attempt.close();
      }
    });
  }

  /** A streamed call: the response once its head is OK (retried until then) and its attempt,
   * which the caller closes. */
  async open(call: Call, options: CallOptions = {}): Promise<[Response, Attempt]> {
    return this.withRetries(options, async (attempt) => {
      try {
        return [await this.send(call, attempt, options), attempt];
      } catch (error) {
        const translated = attempt.translate(error);
        attempt.close();
        throw translated;
      }
    });
  }

  private async send(call: Call, attempt: Attempt, options: CallOptions): Promise<Response> {
    attempt.arm(call.head);
    const response = await this.settings.fetch(this.url(call), {
      method: call.method,
      headers: this.headers(call, attempt.requestId, options),
      body: call.body === undefined ? null : JSON.stringify(call.body),
      signal: attempt.controller.signal,
    });
    if (response.ok || call.accept?.includes(response.status)) return response;
    attempt.arm("request");
    throw await errorOf(response, attempt.requestId);
  }

  private async withRetries<T>(options: CallOptions, run: (attempt: Attempt) => Promise<T>): Promise<T> {
    const timeouts = { ...this.settings.timeouts, ...options.timeouts };
    const deadline = Date.now() + timeouts.requestMs;
    const baseId = options.requestId ?? randomUUID();
    const maxRetries = options.maxRetries ?? this.settings.retry.maxRetries;
    for (let retry = 0; ; retry++) {
      const requestId = retry === 0 ? baseId : `${baseId}-retry${retry}`;
      try {
        return await run(new Attempt(requestId, deadline, timeouts, options.signal));
      } catch (error) {
        const delayMs = retry < maxRetries ? this.retryDelay(error, retry) : undefined;
        if (delayMs === undefined || Date.now() + delayMs >= deadline) throw error;
        this.settings.onRetry?.({ retry: retry + 1, delayMs, error: error as LearnXError, requestId });
        await wait(delayMs, options.signal);
      }
    }
  }

  /** How long to wait before retrying after `error`, or undefined when it must not be retried. */
  private retryDelay(error: unknown, retry: number): number | undefined {
    const policy = this.settings.retry;
    const retryable = error instanceof RateLimitError || error instanceof ServiceUnavailableError
      || error instanceof ConnectionError;
    if (!retryable) return undefined;
    const retryAfterMs = error instanceof ServiceError ? error.retryAfterMs : undefined;
    if (retryAfterMs !== undefined) {
      return retryAfterMs <= policy.maxRetryAfterMs ? retryAfterMs : undefined;
    }
    const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
    return cap * (0.5 + Math.random() / 2); // "equal jitter": never zero, never above the cap
  }

  private url(call: Call): string {
    const url = new URL(this.settings.baseUrl.replace(/\/+$/, "") + call.path);
    for (const [name, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }

  private headers(call: Call, requestId: string, options: CallOptions): Record<string, string> {
    const headers: Record<string, string> = {
      accept: "application/json, text/event-stream",
      "x-request-id": requestId,
      ...this.settings.headers,
      ...options.headers,
    };
    if (call.body !== undefined) headers["content-type"] = "application/json";
    if (this.settings.apiKey) headers["authorization"] = `Bearer ${this.settings.apiKey}`;
    return headers;
  }
}

/** Sleep, or throw the signal's reason as soon as it aborts. */
async function wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch (error) {
    throw signal?.aborted ? signal.reason : error;
  }
}

export function parseJson<T>(text: string, requestId: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ProtocolError(`the service answered something that is not JSON: ${text.slice(0, 200)}`,
                            requestId);
  }
}

/** The typed error of an error answer (its body read, whatever its shape). */
async function errorOf(response: Response, requestId: string): Promise<ServiceError> {
  const text = await response.text();
  let payload: unknown;
  try {
    payload = JSON.parse(text);
  } catch {
    payload = undefined;
  }
  const fallback = `HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ""}`;
  const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
  return serviceError(response.status, errorBody(payload, fallback), requestId, retryAfterMs);
}

/** Retry-After in seconds or as an HTTP date, in milliseconds. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
