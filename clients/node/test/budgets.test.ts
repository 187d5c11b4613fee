// Budget levels against the live service: a class's budget set through the admin API, spent by its
// learners' requests (group_id), refused with the level and period named, read per level in the
// usage report, then removed.

import assert from "node:assert/strict";
import { before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { BudgetExceededError, InvalidRequestError, type BudgetLevel } from "../src/index.js";
import { client, fakeOpenAI, freshProviders, newUser, recordsOf } from "./support.js";

const api = client(); // the tests' admin key, whose tenant is its id
const TENANT = "tests";
const MATERIAL = "Photosynthesis: plants use light, water and carbon dioxide to make sugar.";

before(freshProviders);

test("a group's budget refuses its learners, naming the level and the period", async () => {
  const group = newUser("class");
  const user = newUser("learner");
  const set = await api.setBudget({ tenant: TENANT, group },
                                  { usd: 0.000001, period: "week", on_exhausted: "refuse" });
  assert.equal(set.source, "api");
  assert.deepEqual([set.level, set.group, set.status[0]?.period], ["group", group, "week"]);
  await assert.rejects(
    api.generateContent({ content: MATERIAL, content_type: "summary", model: "gpt-4o-mini",
                          user_id: user, group_id: group, stream: false }),
    (error: unknown) => {
      assert.ok(error instanceof BudgetExceededError);
      assert.deepEqual([error.status, error.level, error.period], [402, "group", "week"]);
      assert.match(error.message, new RegExp(group));
      return true;
    });
  const [record] = await recordsOf(api, user, 1);
  assert.deepEqual([record?.group_id, record?.status], [group, 402]);
  await api.deleteBudget({ tenant: TENANT, group });
});

test("usage answers per group and per level; a budget is read, then removed", async () => {
  const group = newUser("class");
  const user = newUser("learner");
  await api.setBudget({ tenant: TENANT, group }, { usd: 5, period: "month", learner_cap_usd: 1 });
  await fakeOpenAI.enqueue({ reply: { text: "Plants make sugar from light.", prompt_tokens: 40,
                                      completion_tokens: 6 } });
  const answer = await api.generateContent({ content: MATERIAL, content_type: "summary",
                                             model: "gpt-4o-mini", user_id: user,
                                             group_id: group, stream: false });
  await api.createEmbeddings(["photosynthesis"], { user_id: user, group_id: group });
  assert.deepEqual((await recordsOf(api, user, 2)).map((r) => r.group_id), [group, group]);

  const report = await api.usage(user, { group });
  assert.deepEqual([report.group, report.totals.requests], [group, 2]);
  const levels = new Map(report.budgets?.map((b) => [b.level, b]));
  assert.equal(levels.get("learner_share")?.limit_usd, 1);
  assert.equal(levels.get("group")?.limit_usd, 5);

  const spent = await settled(() => api.budget({ tenant: TENANT, group }));
  const [status] = spent.status;
  assert.ok(Math.abs((status?.spent_usd ?? 0) - answer.metadata.cost_usd) < 1e-9,
            "the group spent what the answer cost");
  assert.ok(Math.abs((status?.remaining_usd ?? 0) - (5 - answer.metadata.cost_usd)) < 1e-9);

  await api.deleteBudget({ tenant: TENANT, group });
  await assert.rejects(api.budget({ tenant: TENANT, group }), (error: unknown) => {
    assert.ok(error instanceof InvalidRequestError);
    assert.equal(error.status, 404);
    return true;
  });
});

/** The level once its spend is settled (settlements run in the background). */
async function settled(read: () => Promise<BudgetLevel>): Promise<BudgetLevel> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const level = await read();
    if ((level.status[0]?.spent_usd ?? 0) > 0 || Date.now() > deadline) return level;
    await sleep(100);
  }
}
