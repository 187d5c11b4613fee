// Usage and cost per user, as the ledger recorded them.

import assert from "node:assert/strict";
import { before, test } from "node:test";

import { client, fakeOpenAI, freshProviders, newUser, recordsOf } from "./support.js";

const api = client();

before(freshProviders);

test("usage(userId) totals a user's requests, tokens and cost by operation and provider", async () => {
  const user = newUser("usage");
  await fakeOpenAI.enqueue({ reply: { text: "Plants make sugar from light.", prompt_tokens: 40,
                                      completion_tokens: 6 } });
  const answer = await api.generateContent({ content: "Photosynthesis.", content_type: "summary",
                                             model: "gpt-4o-mini", user_id: user, stream: false });
  await api.createEmbeddings(["photosynthesis"], { user_id: user });
  await recordsOf(api, user, 2);

  const report = await api.usage(user);
  assert.equal(report.user_id, user);
  assert.equal(report.totals.requests, 2);
  assert.equal(report.totals.errors, 0);
  assert.deepEqual(report.by_operation.map((o) => [o.operation, o.requests]),
                   [["embeddings", 1], ["generate-content", 1]]);
  const openai = report.by_provider.find((p) => p.provider === "openai");
  assert.equal(openai?.input_tokens, 40);
  assert.equal(openai?.output_tokens, 6);
  assert.ok(Math.abs((openai?.cost_usd ?? 0) - answer.metadata.cost_usd) < 1e-9, "the ledger bills what the answer said");
  assert.equal(report.by_day.length, 1);
});

test("usage() without a user reports every user; from/to narrow the days", async () => {
  const all = await api.usage();
  assert.equal(all.user_id, null);
  assert.ok(all.totals.requests > 0);
  const past = await api.usage(undefined, { from: "2000-01-01", to: "2000-01-31" });
  assert.equal(past.totals.requests, 0);
});
