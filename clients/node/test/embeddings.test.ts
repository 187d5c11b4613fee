// Embeddings through the client, and the seed's migration test "embeddings are consistent": the
// service's vectors against reference vectors from an independent implementation.

import assert from "node:assert/strict";
import { test } from "node:test";

import { client, cosine, newUser, readJson, recordsOf } from "./support.js";

interface Reference {
  model: string;
  dims: number;
  items: { text: string; embedding: number[] }[];
}

// sentence-transformers' all-MiniLM-L6-v2 on torch; the repository's copy of
// ../shared/data/minilm_reference.json, so the test runs from any checkout.
const REFERENCE = readJson<Reference>("../../tests/data/minilm_reference.json");
const api = client();

test("embeddings are consistent with the reference implementation (cosine > 0.95, and > 0.999)", async () => {
  const texts = REFERENCE.items.map((item) => item.text);
  const result = await api.createEmbeddings(texts, { model: "all-minilm-l6-v2", use_cache: false });
  assert.equal(result.model, "all-minilm-l6-v2");
  assert.equal(result.dims, REFERENCE.dims);
  assert.equal(result.embeddings.length, texts.length);
  const similarities = REFERENCE.items.map((item, i) => cosine(result.embeddings[i] ?? [], item.embedding));
  const worst = Math.min(...similarities);
  assert.ok(worst > 0.95, `the seed's bar: worst cosine ${worst}`);
  assert.ok(worst > 0.999, `the same model: worst cosine ${worst}`);
});

test("vectors come back in input order, duplicates once computed, then from the cache", async () => {
  const unique = `cache probe ${Math.random()}`;
  const texts = [unique, "The cat sat on the mat.", unique];
  const first = await api.createEmbeddings(texts);
  assert.equal(first.count, 3);
  assert.equal(first.deduplicated, 1);
  assert.deepEqual(first.embeddings[0], first.embeddings[2]);
  assert.notDeepEqual(first.embeddings[0], first.embeddings[1]);
  const second = await api.createEmbeddings(texts);
  assert.equal(second.cache_hits, 2, "both distinct texts come from the cache");
  assert.ok(cosine(second.embeddings[0] ?? [], first.embeddings[0] ?? []) > 0.9999);
  assert.ok(second.processing_time >= 0);
});

test("the seed's call shape: createEmbeddings(texts) answers one vector per text, metered per user", async () => {
  const user = newUser("embed");
  const { embeddings } = await api.createEmbeddings(["one", "two"], { user_id: user });
  assert.equal(embeddings.length, 2);
  assert.ok(embeddings.every((v) => v.length === 384));
  const [record] = await recordsOf(api, user);
  assert.equal(record?.operation, "embeddings");
  assert.equal(record?.model, "all-minilm-l6-v2");
});
