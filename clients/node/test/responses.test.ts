// POST /v1/responses and /v1/completions with the official `openai` package: on the local model
// and the fake OpenAI and Anthropic providers, metered for the user.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import OpenAI from "openai";

import { client, freshProviders, newUser, recordsOf } from "./support.js";

const api = client();
const openai = new OpenAI({ ...api.openAIOptions(), maxRetries: 0 });

beforeEach(freshProviders);

for (const model of ["smollm2-135m", "gpt-4o-mini", "claude-haiku"]) {
  test(`responses are created and streamed on ${model}`, async () => {
    const response = await openai.responses.create({
      model, input: "Say hello to a new student.", max_output_tokens: 16, temperature: 0 });
    assert.ok(["completed", "incomplete"].includes(response.status ?? ""));
    assert.ok(response.output_text.trim().length > 0);
    const stream = openai.responses.stream({
      model, input: "Say hello to a new student.", max_output_tokens: 16, temperature: 0 });
    let text = "";
    for await (const event of stream) {
      if (event.type === "response.output_text.delta") text += event.delta;
    }
    const final = await stream.finalResponse();
    assert.ok(text.length > 0);
    assert.equal(final.output_text, text);
  });
}

test("a raw prompt is completed and metered as completions", async () => {
  const user = newUser("completions");
  const completion = await openai.completions.create({
    model: "smollm2-135m", prompt: "The three primary colours are", max_tokens: 8, user });
  assert.equal(completion.object, "text_completion");
  assert.ok((completion.choices[0]?.text ?? "").length > 0);
  const [record] = await recordsOf(api, user);
  assert.equal(record?.operation, "completions");
  assert.equal(record?.output_tokens, completion.usage?.completion_tokens);
});

test("a stateful Responses parameter is the SDK's BadRequestError naming it", async () => {
  await assert.rejects(
    openai.responses.create({ model: "smollm2-135m", input: "Hi", previous_response_id: "resp_1" }),
    (error: unknown) => error instanceof OpenAI.BadRequestError
      && error.param === "previous_response_id");
});
