// Server-sent events off a response body, each wait for the next one bounded by the attempt's limits.

import { EventSourceParserStream } from "eventsource-parser/stream";

import type { Attempt } from "./transport.js";

/** The `data` of each event, until the body ends. The first wait is bounded by `first_event`,
 * every later one by `idle`; a slow consumer between events is not counted as silence. */
export async function* sseData(body: ReadableStream<Uint8Array>, attempt: Attempt): AsyncGenerator<string> {
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
      yield value.data;
    }
  } finally {
    attempt.close();
    reader.releaseLock();
  }
}
