// What the live-service tests share: where the service and its fake providers are (set by
// tests/clients/test_node_client.py, which starts them), and a few helpers.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

import { LearnXClient, type ClientOptions, type UsageRecord } from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with npm test (see README)`);
  return value;
}

export const SERVICE = {
  /** The full app: auth on, local SmolLM2, fake hosted providers, PostgreSQL ledger, Redis. */
  url: env("LEARNX_TEST_URL"),
  /** The API-only app: auth off, no local chat model (a 503 reaches the client). */
  liteUrl: env("LEARNX_TEST_LITE_URL"),
  apiKey: env("LEARNX_TEST_API_KEY"),
  /** A key of the full app allowed 20 requests per minute, used only by the 429 test. */
  limitedKey: env("LEARNX_TEST_LIMITED_KEY"),
  fakeOpenAI: env("LEARNX_TEST_FAKE_OPENAI"),
  fakeAnthropic: env("LEARNX_TEST_FAKE_ANTHROPIC"),
};

export const PACKAGE_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export function readJson<T>(pathFromPackage: string): T {
  return JSON.parse(readFileSync(PACKAGE_ROOT + pathFromPackage, "utf8")) as T;
}

/** A client of the full app with the test key; no retries unless asked. */
export function client(options: ClientOptions = {}): LearnXClient {
  return new LearnXClient({ baseUrl: SERVICE.url, apiKey: SERVICE.apiKey, ...options,
                            retry: { maxRetries: 0, ...options.retry } });
}

export function liteClient(options: ClientOptions = {}): LearnXClient {
  return new LearnXClient({ baseUrl: SERVICE.liteUrl, ...options,
                            retry: { maxRetries: 0, ...options.retry } });
}

export function newUser(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** A fake provider's script, driven over its test-only control route. */
export class Fake {
  constructor(private readonly url: string) {}

  async enqueue(...behaviours: ({ fault: Record<string, unknown> } | { reply: Record<string, unknown> })[]):
    Promise<void> {
    await this.control("POST", { behaviours });
  }

  /** Behaviours not yet consumed, and requests received since the last reset. */
  /** The faults still queued and the requests seen (the fake also reports its invoice). */
  async state(): Promise<{ pending: number; requests: number }> {
    const { pending, requests } = await this.control<{ pending: number; requests: number }>("GET");
    return { pending, requests };
  }

  async reset(): Promise<void> {
    await this.control("DELETE");
  }

  private async control<T>(method: string, body?: unknown): Promise<T> {
    const response = await fetch(`${this.url}/_fake/script`, {
      method, headers: { "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    if (!response.ok) throw new Error(`fake control: HTTP ${response.status}`);
    return (await response.json()) as T;
  }
}

export const fakeOpenAI = new Fake(SERVICE.fakeOpenAI);
export const fakeAnthropic = new Fake(SERVICE.fakeAnthropic);

/** Empty scripts and closed circuit breakers: a test's faults must not leak into the next. */
export async function freshProviders(): Promise<void> {
  await Promise.all([fakeOpenAI.reset(), fakeAnthropic.reset()]);
  for (const [url, headers] of [[SERVICE.url, { authorization: `Bearer ${SERVICE.apiKey}` }],
                                [SERVICE.liteUrl, {}]] as const) {
    const response = await fetch(`${url}/health/providers/reset`, { method: "POST", headers });
    if (!response.ok) throw new Error(`breaker reset: HTTP ${response.status}`);
  }
}

/** A user's ledger records once `count` are there (they are written in the background). */
export async function recordsOf(api: LearnXClient, user: string, count = 1): Promise<UsageRecord[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const records = await api.usageRecords(user);
    if (records.length >= count || Date.now() > deadline) return records;
    await sleep(100);
  }
}

export function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let aa = 0;
  let bb = 0;
  a.forEach((x, i) => {
    const y = b[i] ?? 0;
    dot += x * y;
    aa += x * x;
    bb += y * y;
  });
  return dot / Math.sqrt(aa * bb);
}
