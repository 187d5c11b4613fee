// Tool calling with the official `openai` package: a required call on the local model, and parallel
// calls then an answer from their results on the fake OpenAI and Anthropic providers.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import OpenAI from "openai";

import { client, fakeAnthropic, fakeOpenAI, freshProviders, newUser, recordsOf } from "./support.js";

const api = client();
const openai = new OpenAI({ ...api.openAIOptions(), maxRetries: 0 });

const weather: OpenAI.Chat.Completions.ChatCompletionTool = {
  type: "function",
  function: {
    name: "get_weather", description: "Get the current weather for a city.",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 40 } },
                  required: ["city"], additionalProperties: false },
  },
};

beforeEach(freshProviders);

test("the local model makes a named call whose arguments parse, metered for the user", async () => {
  const user = newUser("tools");
  const completion = await openai.chat.completions.create({
    model: "smollm2-135m", max_tokens: 64, temperature: 0, tools: [weather], user,
    tool_choice: { type: "function", function: { name: "get_weather" } },
    messages: [{ role: "user", content: "What's the weather in Paris?" }] });
  const choice = completion.choices[0];
  assert.equal(choice?.finish_reason, "tool_calls");
  const call = choice?.message.tool_calls?.[0];
  assert.ok(call?.type === "function" && call.function.name === "get_weather");
  assert.equal(typeof JSON.parse(call.function.arguments).city, "string");
  const [record] = await recordsOf(api, user);
  assert.equal(record?.output_tokens, completion.usage?.completion_tokens);
});

for (const [model, fake] of [["gpt-4o-mini", fakeOpenAI], ["claude-haiku", fakeAnthropic]] as const) {
  test(`${model}: streamed parallel calls, then the answer from their results`, async () => {
    const calls = [{ name: "get_weather", arguments: '{"city": "Paris"}' },
                   { name: "get_weather", arguments: '{"city": "Oslo"}' }];
    await fake.enqueue({ reply: { text: "", tool_calls: calls } },
                       { reply: { text: "Sunny in Paris, snow in Oslo." } });
    const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
      { role: "user", content: "Weather in Paris and Oslo?" }];
    const stream = openai.chat.completions.stream({ model, messages, tools: [weather] });
    const streamed = await stream.finalChatCompletion();
    const message = streamed.choices[0]?.message;
    assert.equal(streamed.choices[0]?.finish_reason, "tool_calls");
    const made = (message?.tool_calls ?? []).flatMap((c) => c.type === "function" ? [c] : []);
    assert.deepEqual(made.map((c) => JSON.parse(c.function.arguments).city), ["Paris", "Oslo"]);
    const results = made.map((c, i) => ({ role: "tool" as const, tool_call_id: c.id,
                                          content: ["sunny", "snow"][i] ?? "" }));
    const answer = await openai.chat.completions.create({
      model, tools: [weather],
      messages: [...messages, { role: "assistant", content: null, tool_calls: made }, ...results] });
    assert.equal(answer.choices[0]?.message.content, "Sunny in Paris, snow in Oslo.");
  });
}
