// The client of the LEARN-X AI service: the seed's PythonAIClient, typed.

import { ContentStream, DEFAULT_RESUME, type ResumePolicy, type RunStatus } from "./stream.js";
import {
  Transport, type CallOptions, type RetryEvent, type RetryPolicy, type Settings, type Timeouts,
} from "./transport.js";
import type {
  BudgetLevel, BudgetLevelKey, ContentType, EmbeddingParams, EmbeddingsResult,
  GenerateContentParams, GeneratedContent, Health, LevelBudget, Readiness, UsageQuery,
  UsageRecord, UsageReport,
} from "./types.js";

export interface ClientOptions {
  /** Default: PYTHON_AI_SERVICE_URL, else http://localhost:8001. */
  baseUrl?: string;
  /** The service's API key, sent as a bearer token. Default: PYTHON_AI_SERVICE_API_KEY. */
  apiKey?: string;
  timeouts?: Partial<Timeouts>;
  retry?: Partial<RetryPolicy>;
  /** A stream whose connection drops reconnects with Last-Event-ID (default: 5 times). */
  resume?: Partial<ResumePolicy>;
  /** Sent with every request. */
  headers?: Record<string, string>;
  /** Called before each retry (logs, metrics). */
  onRetry?: (event: RetryEvent) => void;
  fetch?: typeof fetch;
}

export const DEFAULT_TIMEOUTS: Timeouts = {
  connectMs: 10_000, firstEventMs: 60_000, idleMs: 30_000, requestMs: 120_000,
};
export const DEFAULT_RETRY: RetryPolicy = {
  maxRetries: 2, baseDelayMs: 500, maxDelayMs: 8_000, maxRetryAfterMs: 30_000,
};

export type StreamParams = GenerateContentParams & { stream?: true };
export type WholeParams<T extends ContentType> = GenerateContentParams & { content_type: T; stream: false };

export { ContentStream, DEFAULT_RESUME };
export type { ResumePolicy, RunStatus };

export class LearnXClient {
  private readonly transport: Transport;
  private readonly resume: ResumePolicy;

  constructor(options: ClientOptions = {}) {
    this.transport = new Transport(settings(options));
    this.resume = { ...DEFAULT_RESUME, ...options.resume };
  }

  get baseUrl(): string {
    return this.transport.settings.baseUrl;
  }

  /** Personalized learning content. Streamed (the default): the events as they come, ending with
   * the `done` event; the request is sent when iteration starts. With `stream: false`: the whole
   * answer at once. An error event or an error answer throws the typed error. */
  generateContent<T extends ContentType>(params: WholeParams<T>, options?: CallOptions): Promise<GeneratedContent<T>>;
  generateContent(params: StreamParams, options?: CallOptions): ContentStream;
  generateContent(params: StreamParams | WholeParams<ContentType>,
                  options: CallOptions = {}): ContentStream | Promise<GeneratedContent> {
    const body = { ...params, stream: params.stream !== false };
    if (!body.stream) {
      return this.transport.json({ method: "POST", path: "/api/v1/ai/generate-content", body,
                                   head: "request" }, options);
    }
    const call = { method: "POST", path: "/api/v1/ai/generate-content", body, head: "first_event" } as const;
    return new ContentStream(
      (lastEventId) => this.transport.open(call, lastEventId === undefined ? options : {
        ...options, maxRetries: 0, headers: { ...options.headers, "last-event-id": lastEventId } }),
      this.resume, options.signal, (runId) => this.cancelRun(runId, options));
  }

  /** Stop a run (a stream's generation, `ContentStream.runId`): its stream ends with a
   * ConflictError (`run_stopped`), and it stays stopped. A run that already ended keeps its status. */
  cancelRun(runId: string, options?: CallOptions): Promise<RunStatus> {
    return this.transport.json({ method: "POST", path: `/v1/runs/${encodeURIComponent(runId)}/cancel`,
                                 head: "connect" }, { maxRetries: 0, ...options });
  }

  /** Vectors for `texts`, in input order, with the model that made them and the cache hits. */
  createEmbeddings(texts: string[], params: EmbeddingParams = {},
                   options?: CallOptions): Promise<EmbeddingsResult> {
    return this.transport.json({ method: "POST", path: "/api/v1/ai/embeddings",
                                 body: { texts, ...params }, head: "request" }, options);
  }

  /** Requests, tokens and cost by day, provider, model and operation, of a user, a group
   * (`query.group`) or both (all users without either: an admin key); with a user or a group, the
   * budgets their requests spend, per level (`budgets`). */
  usage(userId?: string, query: UsageQuery = {}, options?: CallOptions): Promise<UsageReport> {
    return this.transport.json({ method: "GET", path: "/api/v1/ai/usage", head: "connect",
                                 query: { user_id: userId, group: query.group, from: query.from,
                                          to: query.to } }, options);
  }

  /** Create or change a level's budget (admin keys): a tenant's, a group's or a user's. */
  setBudget(level: BudgetLevelKey, budget: LevelBudget, options?: CallOptions): Promise<BudgetLevel> {
    return this.transport.json({ method: "PUT", path: budgetPath(level), body: budget,
                                 head: "request" }, options);
  }

  /** A level's budget and what is spent and left of it this period (admin keys); a level without
   * one is an InvalidRequestError (404). */
  budget(level: BudgetLevelKey, options?: CallOptions): Promise<BudgetLevel> {
    return this.transport.json({ method: "GET", path: budgetPath(level), head: "connect" }, options);
  }

  /** Remove the budget set through the API (admin keys); the config file's, if any, applies again. */
  deleteBudget(level: BudgetLevelKey, options?: CallOptions): Promise<BudgetLevel> {
    return this.transport.json({ method: "DELETE", path: budgetPath(level), head: "request" },
                               options);
  }

  /** A user's latest ledger records, newest first. Records are written in the background:
   * a request's record appears shortly after its answer. */
  async usageRecords(userId: string, limit = 50, options?: CallOptions): Promise<UsageRecord[]> {
    const answer = await this.transport.json<{ records: UsageRecord[] }>({
      method: "GET", path: "/api/v1/ai/usage/records", head: "connect",
      query: { user_id: userId, limit } }, options);
    return answer.records;
  }

  health(options?: CallOptions): Promise<Health> {
    return this.transport.json({ method: "GET", path: "/api/v1/ai/health", head: "connect" },
                               { maxRetries: 0, ...options });
  }

  /** Whether every model replica and the embedder answer (`not_ready` is an answer, not an error). */
  ready(options?: CallOptions): Promise<Readiness> {
    return this.transport.json({ method: "GET", path: "/api/v1/ai/ready", head: "connect",
                                 accept: [503] }, { maxRetries: 0, ...options });
  }

  /** Options for the official `openai` package against the service's OpenAI-compatible /v1:
   * `new OpenAI(client.openAIOptions())`. */
  openAIOptions(): { baseURL: string; apiKey: string; defaultHeaders: Record<string, string> } {
    const { baseUrl, apiKey, headers } = this.transport.settings;
    return { baseURL: `${baseUrl}/v1`, apiKey: apiKey ?? "unused", defaultHeaders: headers };
  }
}

function budgetPath(level: BudgetLevelKey): string {
  const base = `/api/v1/ai/budgets/${encodeURIComponent(level.tenant)}`;
  if (level.group !== undefined) return `${base}/groups/${encodeURIComponent(level.group)}`;
  return level.user !== undefined ? `${base}/users/${encodeURIComponent(level.user)}` : base;
}

function settings(options: ClientOptions): Settings {
  const env = process.env;
  return {
    baseUrl: (options.baseUrl ?? env["PYTHON_AI_SERVICE_URL"] ?? "http://localhost:8001").replace(/\/+$/, ""),
    apiKey: options.apiKey ?? env["PYTHON_AI_SERVICE_API_KEY"],
    headers: options.headers ?? {},
    timeouts: { ...DEFAULT_TIMEOUTS, ...options.timeouts },
    retry: { ...DEFAULT_RETRY, ...options.retry },
    onRetry: options.onRetry,
    fetch: options.fetch ?? globalThis.fetch,
  };
}
