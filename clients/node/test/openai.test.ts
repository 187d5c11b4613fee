// The OpenAI-compatible /v1 routes are called with the official `openai` package, configured by
// openAIOptions(): what the README shows.

import assert from "node:assert/strict";
import { test } from "node:test";

import OpenAI from "openai";

import { client, newUser, recordsOf } from "./support.js";

const api = client();
const openai = new OpenAI({ ...api.openAIOptions(), maxRetries: 0 });

test("chat completions stream through the official SDK, metered for the user", async () => {
  const user = newUser("openai");
  const stream = await openai.chat.completions.create({
    model: "smollm2-135m", max_tokens: 16, stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: "Say hello to a new student." }], user });
  let text = "";
  let completionTokens = 0;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
  }
  assert.ok(text.trim().length > 0);
  assert.ok(completionTokens > 0 && completionTokens <= 16);
  const [record] = await recordsOf(api, user);
  assert.equal(record?.operation, "chat.completions");
  assert.equal(record?.output_tokens, completionTokens);
});

test("embeddings and the model list through the official SDK", async () => {
  const embedded = await openai.embeddings.create({ model: "all-minilm-l6-v2", input: ["a", "b"] });
  assert.equal(embedded.data.length, 2);
  assert.equal(embedded.data[0]?.embedding.length, 384);
  const models = [];
  for await (const model of openai.models.list()) models.push(model.id);
  assert.ok(models.includes("smollm2-135m") && models.includes("all-minilm-l6-v2"));
});

test("the SDK raises its own typed errors for the service's error answers", async () => {
  const bad = new OpenAI({ ...api.openAIOptions(), apiKey: "lx_wrong", maxRetries: 0 });
  await assert.rejects(bad.models.list(), (error: unknown) => error instanceof OpenAI.AuthenticationError);
});
