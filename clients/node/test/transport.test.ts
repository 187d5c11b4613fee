// What the live service cannot be made to do: answers it never gives, played by an injected fetch.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  LearnXClient, ProtocolError, RateLimitError, ServiceError, UpstreamTimeoutError, type RetryEvent,
} from "../src/index.js";

/** A client whose fetch answers from `answers`, one per call, recording the headers sent. */
function scripted(answers: (() => Response)[], retries: RetryEvent[] = []) {
  const sent: Headers[] = [];
  const fetch = async (_: string | URL | Request, init?: RequestInit) => {
    sent.push(new Headers(init?.headers));
    const next = answers.shift();
    if (!next) throw new Error("no more scripted answers");
    return next();
  };
  const api = new LearnXClient({ baseUrl: "http://service.invalid", apiKey: "k", fetch,
                                 retry: { maxRetries: 2, baseDelayMs: 1, maxRetryAfterMs: 5_000 },
                                 onRetry: (e) => retries.push(e) });
  return { api, sent };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) => () =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
const limited = (retryAfter: string) =>
  json(429, { error: { type: "rate_limit_error", message: "slow down", code: "rate_limited" } },
       { "retry-after": retryAfter });
const usage = json(200, { user_id: null, totals: { requests: 0 } });

test("Retry-After as an HTTP date is honoured", async () => {
  const retries: RetryEvent[] = [];
  const { api, sent } = scripted([limited(new Date(Date.now() + 1500).toUTCString()), usage], retries);
  await api.usage();
  assert.equal(retries.length, 1);
  assert.ok((retries[0]?.delayMs ?? 0) > 0 && (retries[0]?.delayMs ?? 0) <= 1500);
  assert.equal(sent[0]?.get("authorization"), "Bearer k");
  assert.equal(sent[1]?.get("x-request-id"), `${sent[0]?.get("x-request-id")}-retry1`);
});

test("a Retry-After longer than maxRetryAfterMs is thrown at once", async () => {
  const retries: RetryEvent[] = [];
  const { api } = scripted([limited("60"), usage], retries);
  await assert.rejects(api.usage(), (error: unknown) =>
    error instanceof RateLimitError && error.retryAfterMs === 60_000);
  assert.equal(retries.length, 0);
});

test("errors are typed by their type, else by status; a body that is not JSON still says what it was", async () => {
  const { api } = scripted([
    json(504, { error: { type: "timeout_error", message: "openai/gpt-4o: no answer within 30s" } }),
    () => new Response("<html>bad gateway</html>", { status: 500 }),
  ]);
  await assert.rejects(api.usage(), UpstreamTimeoutError);
  await assert.rejects(api.usage(), (error: unknown) =>
    error instanceof ServiceError && error.constructor === ServiceError && error.status === 500
    && error.message.includes("bad gateway"));
});

test("a 200 answer that is not JSON is a ProtocolError", async () => {
  const { api } = scripted([() => new Response("not json", { status: 200 })]);
  await assert.rejects(api.usage(), ProtocolError);
});

test("a stream that ends without its terminal event is a ProtocolError, not a silent end", async () => {
  const event = { content: "Plants", type: "summary", metadata: { seq: 1 } };
  const { api } = scripted([() => new Response(`data: ${JSON.stringify(event)}\n\n`,
                                               { status: 200, headers: { "content-type": "text/event-stream" } })]);
  const seen: string[] = [];
  await assert.rejects(async () => {
    for await (const e of api.generateContent({ content: "x", content_type: "summary" })) seen.push(e.content);
  }, ProtocolError);
  assert.deepEqual(seen, ["Plants"]);
});
