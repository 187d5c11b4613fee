// Server-sent events off a response body, each wait for the next one bounded by the attempt's limits.

import { EventSourceParserStream } from "eventsource-parser/stream";

import type { Attempt } from "./transport.js";

/** One event: its id (the service's `run_<hex>:<n>`, what a reconnect resumes after) and data. */
export interface SseEvent {
  id: string | undefined;
  data: string;
}

/** Each event, until the body ends. The first wait is bounded by `first_event`, every later one
 * by `idle`; a slow consumer between events is not counted as silence. */
export async function* sseEvents(body: ReadableStream<Uint8Array>, attempt: Attempt): AsyncGenerator<SseEvent> {
  const reader = body
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(new EventSourceParserStream())
    .getReader();
  let phase: "first_event" | "idle" = "first_event";
  try {
    for (;;) {
      attempt.arm(phase);
      const { done, value } = await reader.read().catch((error: unknown) => {
        throw attempt.translate(error);
      });
      attempt.disarm();
      if (done) return;
      phase = "idle";
      yield { id: value.id, data: value.data };
    }
  } finally {
    attempt.close();
    reader.releaseLock();
  }
}

/** The sequence number of an event id `run_<hex>:<n>`, or undefined for another id. */
export function sequenceOf(id: string | undefined): number | undefined {
  const found = id === undefined ? null : /^run_[0-9a-f]{32}:(\d+)$/.exec(id);
  return found ? Number(found[1]) : undefined;
}
