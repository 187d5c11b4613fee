// Retries, time limits and cancellation, with faults injected in the service's fake providers.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createServer } from "node:net";
import { afterEach, beforeEach, test } from "node:test";

import {
  ConnectionError, LearnXClient, RateLimitError, RequestTimeoutError, ServiceUnavailableError,
  type ContentStream, type GenerateEvent, type RetryEvent,
} from "../src/index.js";
import { SERVICE, client, fakeAnthropic, fakeOpenAI, freshProviders, liteClient, newUser, recordsOf } from "./support.js";

const MATERIAL = "The water cycle: water evaporates, condenses into clouds and falls as rain.";
const fault = (fields: Record<string, unknown>) => ({ fault: fields });

beforeEach(freshProviders);
afterEach(freshProviders);

async function drain(stream: ContentStream): Promise<GenerateEvent[]> {
  const events: GenerateEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

test("a 503 (every provider failed) is retried with backoff, under a new request id", async () => {
  // On the API-only app (no local model) a small-tier request tries gpt-4o-mini once, then
  // claude-3-5-haiku with one retry: three failures make the service answer 503.
  await fakeOpenAI.enqueue(fault({ status: 503 }));
  await fakeAnthropic.enqueue(fault({ status: 503 }), fault({ status: 503 }));
  const retries: RetryEvent[] = [];
  const api = liteClient({ retry: { maxRetries: 2, baseDelayMs: 50 }, onRetry: (e) => retries.push(e) });
  const user = newUser("retry-503");
  const requestId = randomUUID();
  const events = await drain(api.generateContent(
    { content: MATERIAL, content_type: "summary", model: "gpt-4o-mini", user_id: user }, { requestId }));

  assert.equal(events.at(-1)?.type, "done");
  assert.equal(retries.length, 1);
  const [retry] = retries;
  assert.ok(retry?.error instanceof ServiceUnavailableError);
  assert.equal(retry.error.status, 503);
  assert.equal(retry.error.tried.length, 3);
  assert.ok(retry.delayMs >= 25 && retry.delayMs <= 50, `equal jitter of 50 ms: ${retry.delayMs}`);
  assert.deepEqual(await fakeOpenAI.state(), { pending: 0, requests: 2 });
  const records = await recordsOf(api, user, 2);
  assert.deepEqual(records.map((r) => [r.request_id, r.outcome, r.status]).sort(),
                   [[requestId, "error", 503], [`${requestId}-retry1`, "success", 200]]);
});

test("without retries the 503 is thrown, typed, with the routes the service tried", async () => {
  await fakeOpenAI.enqueue(fault({ status: 503 }));
  await fakeAnthropic.enqueue(fault({ status: 503 }), fault({ status: 503 }));
  await assert.rejects(
    liteClient().generateContent({ content: MATERIAL, content_type: "summary", model: "gpt-4o-mini",
                                   stream: false }),
    (error: unknown) => {
      assert.ok(error instanceof ServiceUnavailableError);
      assert.equal(error.code, "all_providers_failed");
      assert.deepEqual(error.tried, ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest",
                                     "anthropic/claude-3-5-haiku-latest"]);
      return true;
    });
});

test("a 429 waits for Retry-After, then succeeds; without retries it is a RateLimitError", async () => {
  const retries: RetryEvent[] = [];
  const limited = (maxRetries: number) => new LearnXClient({
    baseUrl: SERVICE.url, apiKey: SERVICE.limitedKey, retry: { maxRetries },
    onRetry: (e) => retries.push(e) });
  // The key allows 20 requests a minute: spend them until a call has to wait (40 calls at most).
  let calls = 0;
  while (retries.length === 0 && calls < 40) {
    calls += 1;
    await limited(1).createEmbeddings(["rate limited"], { user_id: newUser("rl") });
  }
  const [retry] = retries;
  assert.ok(retry?.error instanceof RateLimitError);
  assert.equal(retry.error.status, 429);
  assert.equal(retry.delayMs, retry.error.retryAfterMs);
  assert.ok(retry.delayMs >= 1000 && retry.delayMs <= 3000, `Retry-After ${retry.delayMs} ms`);

  await assert.rejects(limited(0).createEmbeddings(["rate limited"]), (error: unknown) => {
    assert.ok(error instanceof RateLimitError);
    assert.equal(error.type, "rate_limit_error");
    assert.ok((error.retryAfterMs ?? 0) >= 1000);
    return true;
  });
});

test("an error event after content is thrown typed, and the stream is not retried", async () => {
  // gpt-4o-mini's stream is cut after 2 chunks; the service tries claude-3-5-haiku, which fails
  // twice: the stream, which already delivered text, ends with an error event.
  await fakeOpenAI.enqueue(fault({ cut_after: 2 }));
  await fakeAnthropic.enqueue(fault({ status: 503 }), fault({ status: 503 }));
  const retries: RetryEvent[] = [];
  const api = liteClient({ retry: { maxRetries: 3, baseDelayMs: 1 }, onRetry: (e) => retries.push(e) });
  const seen: GenerateEvent[] = [];
  const stream = api.generateContent({ content: MATERIAL, content_type: "explanation", model: "gpt-4o-mini" });
  await assert.rejects(async () => { for await (const event of stream) seen.push(event); },
                       (error: unknown) => {
                         assert.ok(error instanceof ServiceUnavailableError);
                         assert.equal(error.status, 503);
                         return true;
                       });
  assert.ok(seen.filter((e) => e.type === "explanation").length >= 2, "text came before the error");
  // No other model produced text, so no hand-over is announced (a marker only precedes the text
  // of the model that takes over).
  assert.ok(!seen.some((e) => e.type === "fallback"), "no hand-over was announced");
  assert.equal(retries.length, 0);
  assert.deepEqual(await fakeOpenAI.state(), { pending: 0, requests: 1 });
  assert.deepEqual(await fakeAnthropic.state(), { pending: 0, requests: 2 });
});

test("aborting through an AbortSignal stops the stream; the ledger says client_disconnected", async () => {
  const api = client();
  const user = newUser("abort");
  const controller = new AbortController();
  const stream = api.generateContent({ content: MATERIAL, content_type: "explanation",
                                       model: "smollm2-135m", max_tokens: 600, user_id: user },
                                     { signal: controller.signal });
  let received = 0;
  await assert.rejects(async () => {
    for await (const event of stream) {
      if (event.type === "explanation" && ++received === 3) controller.abort();
    }
  }, { name: "AbortError" });
  assert.equal(received, 3);
  const [record] = await recordsOf(api, user);
  assert.equal(record?.outcome, "client_disconnected");
  assert.equal(record?.status, 499);
  assert.ok((record?.output_tokens ?? 0) < 600, "the generation stopped early");
});

test("breaking out of the loop also closes the stream (client_disconnected)", async () => {
  const api = client();
  const user = newUser("break");
  for await (const event of api.generateContent({ content: MATERIAL, content_type: "summary",
                                                  model: "smollm2-135m", max_tokens: 600, user_id: user })) {
    if (event.type === "summary") break;
  }
  const [record] = await recordsOf(api, user);
  assert.equal(record?.outcome, "client_disconnected");
});

test("a stream that goes silent fails with the idle limit, and is not retried", async () => {
  await fakeOpenAI.enqueue(fault({ idle_after: 2 }));
  const retries: RetryEvent[] = [];
  const api = liteClient({ timeouts: { idleMs: 300 }, retry: { maxRetries: 2 }, onRetry: (e) => retries.push(e) });
  await assert.rejects(
    drain(api.generateContent({ content: MATERIAL, content_type: "explanation", model: "gpt-4o-mini" })),
    (error: unknown) => {
      assert.ok(error instanceof RequestTimeoutError);
      assert.equal(error.phase, "idle");
      assert.equal(error.timeoutMs, 300);
      return true;
    });
  assert.equal(retries.length, 0);
});

test("no first event within firstEventMs is a RequestTimeoutError of that phase", async () => {
  await fakeOpenAI.enqueue(fault({ delay_s: 1.5 }));
  const api = liteClient({ timeouts: { firstEventMs: 300 } });
  await assert.rejects(
    drain(api.generateContent({ content: MATERIAL, content_type: "summary", model: "gpt-4o-mini" })),
    (error: unknown) => error instanceof RequestTimeoutError && error.phase === "first_event");
});

test("an unreachable service is a ConnectionError, retried", async () => {
  const port = await closedPort();
  const retries: RetryEvent[] = [];
  const api = new LearnXClient({ baseUrl: `http://127.0.0.1:${port}`, retry: { maxRetries: 2, baseDelayMs: 5 },
                                 onRetry: (e) => retries.push(e) });
  await assert.rejects(api.usage(), (error: unknown) => error instanceof ConnectionError);
  assert.equal(retries.length, 2);
});

/** A loopback port that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  return typeof address === "object" && address ? address.port : 0;
}
