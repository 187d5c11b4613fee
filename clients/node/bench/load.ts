// The seed's `npm run test:load:python`: a bounded load on a live service through this client,
// reporting latency percentiles, throughput and cost per request for generate-content (streamed)
// and embeddings. Costs come from the service's usage ledger, for a user of this run's own.
//
//   npm run test:load:python -- --url http://127.0.0.1:8001 --requests 40 --concurrency 4 \
//     [--api-key KEY] [--ops content,embeddings] [--model small] [--max-tokens 64]
//     [--embedding-model all-minilm-l6-v2] [--texts 8] [--users 10]

import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

import { LearnXClient } from "../src/index.js";

const { values: flags } = parseArgs({ options: {
  url: { type: "string", default: process.env["PYTHON_AI_SERVICE_URL"] ?? "http://localhost:8001" },
  "api-key": { type: "string", default: process.env["PYTHON_AI_SERVICE_API_KEY"] ?? "" },
  ops: { type: "string", default: "content,embeddings" },
  requests: { type: "string", default: "40" },
  concurrency: { type: "string", default: "4" },
  model: { type: "string", default: "small" },
  "max-tokens": { type: "string", default: "64" },
  texts: { type: "string", default: "8" },
  "embedding-model": { type: "string", default: "all-minilm-l6-v2" },
  users: { type: "string", default: "10" },
} });

function bounded(name: string, value: string, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} must be 1-${max}`);
  return n;
}

const REQUESTS = bounded("requests", flags.requests, 5_000);
const CONCURRENCY = bounded("concurrency", flags.concurrency, 128);
const MAX_TOKENS = bounded("max-tokens", flags["max-tokens"], 1_024);
const TEXTS = bounded("texts", flags.texts, 256);
// Learners of this run's own: the service limits requests per user (120 a minute by default).
const USERS = Array.from({ length: bounded("users", flags.users, 1_000) }, (_, i) => `load-${Date.now()}-${i}`);
const userOf = (i: number) => USERS[i % USERS.length] ?? "";
// Retries would hide the service's own answers; a load test wants to see them.
const api = new LearnXClient({ baseUrl: flags.url, apiKey: flags["api-key"], retry: { maxRetries: 0 } });

const TOPICS = ["photosynthesis", "the water cycle", "supply and demand", "fractions", "gravity",
                "the French Revolution", "cell division", "electric circuits"];

interface Sample { ms: number; firstMs?: number; costUsd?: number; cacheHits?: number }

/** Run `one(i)` REQUESTS times, CONCURRENCY at a time; failures are counted, not thrown. */
async function load(one: (i: number) => Promise<Sample>) {
  const samples: Sample[] = [];
  const errors = new Map<string, number>();
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    for (let i = next++; i < REQUESTS; i = next++) {
      try {
        samples.push(await one(i));
      } catch (error) {
        const name = error instanceof Error ? error.name : String(error);
        errors.set(name, (errors.get(name) ?? 0) + 1);
      }
    }
  }));
  return { samples, errors, seconds: (performance.now() - started) / 1000 };
}

async function content(i: number): Promise<Sample> {
  // Distinct material per request: identical requests in flight would share one generation.
  const topic = TOPICS[i % TOPICS.length] ?? "";
  const started = performance.now();
  let firstMs: number | undefined;
  let costUsd = 0;
  for await (const event of api.generateContent({
    content: `Lesson ${i}: ${topic}.`, content_type: "explanation", model: flags.model,
    max_tokens: MAX_TOKENS, user_id: userOf(i) })) {
    firstMs ??= performance.now() - started;
    if (event.type === "done") costUsd = event.metadata.cost_usd;
  }
  return { ms: performance.now() - started, ...(firstMs === undefined ? {} : { firstMs }), costUsd };
}

async function embeddings(i: number): Promise<Sample> {
  // Half the texts recur across requests (the cache's case), half are new.
  const texts = Array.from({ length: TEXTS }, (_, k) =>
    k % 2 ? `Key idea ${k} of ${TOPICS[k % TOPICS.length]}.` : `Request ${i}, passage ${k}: ${TOPICS[(i + k) % TOPICS.length]}.`);
  const started = performance.now();
  const result = await api.createEmbeddings(texts, { model: flags["embedding-model"], user_id: userOf(i) });
  return { ms: performance.now() - started, cacheHits: result.cache_hits };
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

/** The ledger's cost per request of `operation` for this run's users (written in the background). */
async function ledgerCost(operation: string, expected: number): Promise<number | undefined> {
  const deadline = Date.now() + 15_000;
  do {
    const rows = (await Promise.all(USERS.map((user) => api.usage(user))))
      .flatMap((report) => report.by_operation.filter((o) => o.operation === operation));
    const requests = rows.reduce((sum, row) => sum + row.requests, 0);
    if (requests >= expected) return rows.reduce((sum, row) => sum + row.cost_usd, 0) / requests;
    await sleep(200);
  } while (Date.now() < deadline);
  return undefined;
}

const OPERATIONS = { content: ["generate-content", content], embeddings: ["embeddings", embeddings] } as const;

console.log(`${REQUESTS} requests per operation, concurrency ${CONCURRENCY}, ${flags.url}, ${USERS.length} users`);
console.log("| operation | ok / errors | p50 ms | p95 ms | p99 ms | first event p50 / p95 ms | req/s | cost per request (ledger) | cache hits |");
console.log("|---|---|---|---|---|---|---|---|---|");
for (const op of flags.ops.split(",")) {
  const entry = OPERATIONS[op as keyof typeof OPERATIONS];
  if (!entry) throw new Error(`--ops: unknown operation ${op} (content, embeddings)`);
  const [operation, one] = entry;
  const { samples, errors, seconds } = await load(one);
  const ms = samples.map((s) => s.ms);
  const firsts = samples.flatMap((s) => (s.firstMs === undefined ? [] : [s.firstMs]));
  const cost = await ledgerCost(operation, samples.length);
  const hits = samples.reduce((sum, s) => sum + (s.cacheHits ?? 0), 0);
  const cells = [
    `${operation} (${op === "content" ? `${flags.model}, ${MAX_TOKENS} tokens` : `${flags["embedding-model"]}, ${TEXTS} texts`})`,
    `${samples.length} / ${[...errors].map(([name, n]) => `${n} ${name}`).join(", ") || 0}`,
    ...[50, 95, 99].map((p) => percentile(ms, p).toFixed(0)),
    firsts.length ? `${percentile(firsts, 50).toFixed(0)} / ${percentile(firsts, 95).toFixed(0)}` : "-",
    (samples.length / seconds).toFixed(2),
    cost === undefined ? "n/a" : `$${cost.toFixed(8)}`,
    op === "embeddings" ? `${((100 * hits) / (samples.length * TEXTS)).toFixed(0)}%` : "-",
  ];
  console.log(`| ${cells.join(" | ")} |`);
}
