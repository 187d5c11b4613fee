// Typed errors for bad input and for auth, thrown without retries.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AuthenticationError, InvalidRequestError, LearnXClient, ServiceError,
  type ContentType, type RetryEvent,
} from "../src/index.js";
import { SERVICE, client } from "./support.js";

const MATERIAL = "Photosynthesis: plants use light, water and carbon dioxide to make sugar and oxygen.";

/** A client that would retry, recording any retry it makes. */
function watched(retries: RetryEvent[], apiKey = SERVICE.apiKey): LearnXClient {
  return new LearnXClient({ baseUrl: SERVICE.url, apiKey, retry: { maxRetries: 2, baseDelayMs: 1 },
                            onRetry: (event) => retries.push(event) });
}

const BAD_CONTENT: [string, Record<string, unknown>, string, string][] = [
  ["an unknown content type", { content_type: "poem" }, "content_type", "content_type"],
  ["empty content", { content_type: "summary", content: "" }, "content", "content"],
  ["a difficulty out of range", { content_type: "summary", difficulty: 9 }, "difficulty", "between 1 and 5"],
  ["a score above 1", { content_type: "summary", recent_score: 2 }, "recent_score", "recent_score"],
];

for (const [what, fields, param, says] of BAD_CONTENT) {
  for (const stream of [true, false]) {
    test(`${what} is an InvalidRequestError naming ${param} (${stream ? "streamed" : "whole"})`, async () => {
      const retries: RetryEvent[] = [];
      const params = { content: MATERIAL, ...fields } as { content: string; content_type: ContentType };
      const call = stream
        ? async () => { for await (const _ of watched(retries).generateContent(params)) { /* none */ } }
        : () => watched(retries).generateContent({ ...params, stream: false });
      await assert.rejects(call, (error: unknown) => {
        assert.ok(error instanceof InvalidRequestError);
        assert.equal(error.status, 400);
        assert.equal(error.type, "invalid_request_error");
        assert.equal(error.param?.split(".")[0], param);
        assert.match(error.message, new RegExp(says));
        assert.ok(error.requestId);
        return true;
      });
      assert.equal(retries.length, 0, "a bad request is not retried");
    });
  }
}

test("an unknown model is a 404 InvalidRequestError with code model_not_found", async () => {
  await assert.rejects(client().createEmbeddings(["hi"], { model: "no-such-model" }), (error: unknown) => {
    assert.ok(error instanceof InvalidRequestError);
    assert.equal(error.status, 404);
    assert.equal(error.code, "model_not_found");
    assert.equal(error.param, "model");
    return true;
  });
});

test("too many texts is a 422 InvalidRequestError with code limit_exceeded", async () => {
  const texts = Array.from({ length: 257 }, (_, i) => `text ${i}`);
  await assert.rejects(client().createEmbeddings(texts), (error: unknown) => {
    assert.ok(error instanceof InvalidRequestError);
    assert.equal(error.status, 422);
    assert.equal(error.code, "limit_exceeded");
    return true;
  });
});

for (const [what, apiKey, code] of [["without a key", "", "missing_api_key"],
                                    ["with a wrong key", "lx_not-a-key", "invalid_api_key"]] as const) {
  test(`${what}, every authenticated route is an AuthenticationError (401, ${code})`, async () => {
    const retries: RetryEvent[] = [];
    const api = watched(retries, apiKey);
    const calls = [() => api.createEmbeddings(["hi"]), () => api.usage("someone"),
                   () => api.generateContent({ content: MATERIAL, content_type: "summary", stream: false })];
    for (const call of calls) {
      await assert.rejects(call, (error: unknown) => {
        assert.ok(error instanceof AuthenticationError && error instanceof ServiceError);
        assert.equal(error.status, 401);
        assert.equal(error.code, code);
        return true;
      });
    }
    assert.equal(retries.length, 0);
  });
}

test("with the key, the same calls succeed; health and readiness need none", async () => {
  const embedded = await client().createEmbeddings(["hi"]);
  assert.equal(embedded.embeddings.length, 1);
  const open = new LearnXClient({ baseUrl: SERVICE.url, apiKey: "" });
  assert.deepEqual(await open.health(), { status: "ok" });
  const ready = await open.ready();
  assert.equal(ready.status, "ready");
  assert.deepEqual(Object.keys(ready.models).sort(), ["embedder", "smollm2-135m"]);
});
