// Streams that survive a dropped connection: the client reconnects by itself with Last-Event-ID and
// goes on after the last event it saw, on the same run (one generation, one ledger record); a
// stopped run throws; reconnects are bounded.

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import {
  ConflictError, ConnectionError, type ContentStream, type GenerateEvent,
} from "../src/index.js";
import { client, fakeOpenAI, freshProviders, newUser, recordsOf } from "./support.js";

const MATERIAL = "The water cycle: water evaporates, condenses into clouds and falls as rain.";
const TEXT = Array.from({ length: 60 }, (_, i) => `word${i}`).join(" ");

beforeEach(freshProviders);
afterEach(freshProviders);

/** A fetch whose generate-content answers break off after `cuts[n]` bytes (the n-th connection),
 * as a school's Wi-Fi drops: the client sees its connection fail. The bytes behind the cut are
 * still read (the service need not notice the drop, as often on a half-open connection);
 * `refuse`: reconnects fail to connect at all. */
function droppingFetch(cuts: number[], refuse = false): { fetch: typeof fetch; reconnects: string[] } {
  const reconnects: string[] = [];
  let connection = 0;
  const dropping: typeof fetch = async (input, init) => {
    const resumeAfter = new Headers(init?.headers).get("last-event-id");
    if (resumeAfter !== null) {
      reconnects.push(resumeAfter);
      if (refuse) throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED") });
    }
    const cut = String(input).endsWith("/generate-content") ? cuts[connection++] : undefined;
    if (cut === undefined) return fetch(input, init);
    // The connection itself is not the client's to close: the drop is on the way.
    const response = await fetch(input, { ...init, signal: null });
    if (!response.body) return response;
    return new Response(cutAfter(response.body, cut), { status: response.status, headers: response.headers });
  };
  return { fetch: dropping, reconnects };
}

function cutAfter(body: ReadableStream<Uint8Array>, limit: number): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let sent = 0;
  return new ReadableStream({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) return controller.close();
      if (sent + value.length <= limit) {
        sent += value.length;
        return controller.enqueue(value);
      }
      controller.enqueue(value.slice(0, Math.max(0, limit - sent)));
      controller.error(new TypeError("terminated", { cause: new Error("other side closed") }));
      void (async () => { while (!(await reader.read()).done); })().catch(() => undefined); // unread
    },
  });
}

async function drain(stream: ContentStream): Promise<GenerateEvent[]> {
  const events: GenerateEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

const textOf = (events: GenerateEvent[]) =>
  events.filter((e) => e.type === "summary").map((e) => e.content).join("");

test("a stream whose connection drops twice resumes on its run: the whole text, one generation, one record", async () => {
  await fakeOpenAI.enqueue({ reply: { text: TEXT, chunk_delay_s: 0.01 } });
  const { fetch, reconnects } = droppingFetch([700, 1500]);
  const api = client({ fetch, resume: { baseDelayMs: 10 } });
  const user = newUser("resume");
  const stream = api.generateContent({ content: MATERIAL, content_type: "summary", model: "gpt-4o-mini",
                                       user_id: user });
  const events = await drain(stream);

  assert.equal(textOf(events), TEXT);
  assert.equal(events.at(-1)?.type, "done");
  assert.equal(stream.resumes, 2);
  assert.equal(reconnects.length, 2);
  assert.match(reconnects[0] ?? "", /^run_[0-9a-f]{32}:\d+$/);
  assert.equal(reconnects[0]?.split(":")[0], stream.runId);
  const seqs = events.map((e) => (e.metadata as { seq?: number }).seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "no event lost or repeated");
  assert.deepEqual(await fakeOpenAI.state(), { pending: 0, requests: 1 });
  const [record, ...others] = await recordsOf(api, user);
  assert.equal(others.length, 0);
  assert.equal(record?.outcome, "success");
  assert.ok(record && record.resumes >= 1 && record.resumes <= 2, `resumes: ${record?.resumes}`);
});

test("a stopped stream throws ConflictError (run_stopped) and stays stopped", async () => {
  await fakeOpenAI.enqueue({ reply: { text: TEXT, chunk_delay_s: 0.05 } });
  const api = client();
  const user = newUser("stop");
  const stream = api.generateContent({ content: MATERIAL, content_type: "summary", model: "gpt-4o-mini",
                                       user_id: user });
  const seen: GenerateEvent[] = [];
  await assert.rejects(async () => {
    for await (const event of stream) {
      seen.push(event);
      if (seen.length === 2) assert.equal((await stream.stop()).status, "stopped");
    }
  }, (error: unknown) => error instanceof ConflictError && error.code === "run_stopped");
  assert.ok(seen.length < 60);
  assert.equal((await api.cancelRun(stream.runId ?? "")).status, "stopped");
  const [record] = await recordsOf(api, user);
  assert.equal(record?.outcome, "stopped");
});

test("reconnects are bounded: after maxResumes failed tries the drop is thrown", async () => {
  await fakeOpenAI.enqueue({ reply: { text: TEXT, chunk_delay_s: 0.01 } });
  const { fetch, reconnects } = droppingFetch([700], true);
  const stream = client({ fetch, resume: { maxResumes: 3, baseDelayMs: 5 } }).generateContent(
    { content: MATERIAL, content_type: "summary", model: "gpt-4o-mini", user_id: newUser("bounded") });
  await assert.rejects(drain(stream), ConnectionError);
  assert.equal(reconnects.length, 3);
});

test("with resumes off a drop throws at once", async () => {
  await fakeOpenAI.enqueue({ reply: { text: TEXT, chunk_delay_s: 0.01 } });
  const { fetch, reconnects } = droppingFetch([700]);
  const stream = client({ fetch, resume: { maxResumes: 0 } }).generateContent(
    { content: MATERIAL, content_type: "summary", model: "gpt-4o-mini", user_id: newUser("no-resume") });
  await assert.rejects(drain(stream), ConnectionError);
  assert.equal(reconnects.length, 0);
});
