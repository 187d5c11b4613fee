// The service's wire types (router/wire/openai.py and replies.py, router/services/content.py,
// content/). Request and response fields keep the service's names (snake_case), so a body reads
// the same in Node and in the API docs.

export type ContentType =
  | "explanation" | "summary" | "example" | "analogy" | "key_concepts"
  | "quiz" | "flashcards" | "practice_problems";
export type StructuredContentType = "quiz" | "flashcards" | "practice_problems";
export type Provider = "local" | "openai" | "anthropic";
export type LearningStyle = "visual" | "verbal" | "example_first" | "step_by_step";
export type Accommodation = "short_sentences" | "dyslexia_friendly" | "extra_examples";
/** The request's priority (assessment > interactive > background), at most its key's max_tier. */
export type Tier = "assessment" | "interactive" | "background";
export type Difficulty = 1 | 2 | 3 | 4 | 5 | "beginner" | "intermediate" | "advanced";

export interface LearnerProfile {
  learning_style?: LearningStyle;
  level?: string;
  language?: string;
  interests?: string[];
  /** The learner in a few sentences (at most 1000 characters): the learner's words, never instructions. */
  description?: string;
  accommodations?: Accommodation[];
}

export interface GenerateContentParams {
  content: string;
  content_type: ContentType;
  /** A profile, a learning style's name, or a sentence describing the learner. */
  persona?: LearnerProfile | LearningStyle | string;
  user_profile?: LearnerProfile;
  difficulty?: Difficulty;
  /** The learner's last quiz score, 0-1: moves the difficulty up or down. */
  recent_score?: number;
  user_id?: string;
  /** The learner's group (a class) in the key's tenant: the request also spends the group's budget
   * and the learner's share of it. */
  group_id?: string;
  /** A model, an alias or a tier ("small", "large"); the service's default is "small". */
  model?: string;
  preferred_providers?: Provider[];
  /** The key's default tier when omitted; above the key's max_tier the service answers 403. */
  tier?: Tier;
  max_tokens?: number;
}

export interface TextStructure {
  kind: "text" | "paragraph" | "heading" | "list_item" | "code_block" | "question";
  section: number;
  heading: string | null;
  list_items: number;
  in_code_block: boolean;
  question: number | null;
}

export type ItemStructure =
  | { kind: "question"; question: number }
  | { kind: "card"; card: number }
  | { kind: "problem"; problem: number };

export interface EventBase {
  seq: number;
  difficulty: number;
  difficulty_reason: string;
  template_version: string;
}

export interface ContentEvent {
  /** Text for text types; one JSON item (question, card, problem) for structured types. */
  content: string;
  type: ContentType;
  metadata: EventBase & { structure: TextStructure | ItemStructure; provider: string; model: string };
}

export interface FallbackEvent {
  content: "";
  type: "fallback";
  metadata: EventBase & { from: string; to: string; error: string };
}

export interface Usage {
  /** Every prompt token, those read from or written to the provider's prompt cache included. */
  prompt_tokens: number;
  /** Reasoning tokens included. */
  completion_tokens: number;
  total_tokens: number;
}

export interface RouteTaken {
  provider: string;
  model: string;
  reason: string;
  cost_usd: number;
  path?: string[];
}

export interface DoneMetadata extends EventBase {
  provider: string;
  model: string;
  usage: Usage;
  cost_usd: number;
  /** What this request is billed: the cost, or 0 when it shared an identical request's run. */
  billed_usd: number;
  provider_path: RouteTaken[];
  single_flight: { shared: boolean; leader: boolean };
  /** True when a kept artifact of the same inputs in the tenant answered it (billed 0). */
  cached?: boolean;
  /** Text types: the structure at the end and why the model stopped. */
  structure?: TextStructure;
  finish_reason?: string;
  /** Structured types: the validated document and whether it needed a repair. */
  data?: StructuredData;
  repaired?: boolean;
}

export interface DoneEvent {
  content: "";
  type: "done";
  metadata: DoneMetadata;
}

export type GenerateEvent = ContentEvent | FallbackEvent | DoneEvent;

export interface QuizQuestion {
  question: string;
  options: [string, string, string, string];
  answer_index: 0 | 1 | 2 | 3;
  rationale: string;
}
export interface Quiz { questions: QuizQuestion[] }
export interface Flashcards { cards: { front: string; back: string }[] }
export interface PracticeProblems {
  problems: { problem: string; solution_steps: string[]; answer: string }[];
}
export type StructuredData = Quiz | Flashcards | PracticeProblems;

export interface DataOf {
  quiz: Quiz;
  flashcards: Flashcards;
  practice_problems: PracticeProblems;
}

/** The non-streamed answer: the whole text, the terminal metadata, and for structured types `data`. */
export interface GeneratedContent<T extends ContentType = ContentType> {
  content: string;
  type: T;
  metadata: DoneMetadata;
  data?: T extends StructuredContentType ? DataOf[T] : never;
}

export interface EmbeddingParams {
  model?: string;
  use_cache?: boolean;
  deduplicate?: boolean;
  user_id?: string;
  /** The learner's group (a class) in the key's tenant. */
  group_id?: string;
}

export interface EmbeddingsResult {
  /** One vector per input text, in input order. */
  embeddings: number[][];
  model: string;
  dims: number;
  count: number;
  cache_hits: number;
  deduplicated: number;
  /** Seconds the service spent. */
  processing_time: number;
}

export interface Totals {
  requests: number;
  /** Every prompt token (OpenAI's convention): the cached and cache-written ones included. */
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  /** Of input_tokens: read from the provider's prompt cache, written to it. */
  cached_input_tokens: number;
  cache_write_tokens: number;
  /** Of output_tokens: reasoning. */
  reasoning_tokens: number;
  cost_usd: number;
}

export interface UsageReport {
  user_id: string | null;
  group: string | null;
  from: string;
  to: string;
  totals: Totals & { cache_hits: number; errors: number };
  by_day: (Totals & { day: string })[];
  by_provider: (Totals & { provider: string })[];
  by_model: (Totals & { model: string })[];
  by_operation: (Totals & { operation: string })[];
  savings: {
    local_requests: number;
    local_tokens: number;
    local_cost_usd: number;
    hosted_equivalent_usd: number;
    savings_usd: number;
    baseline: string;
  };
  /** The user's own budget per period (`daily_limit_usd`, `daily_spent_usd`, ...). */
  budget?: Record<string, number> | null;
  /** With a user or a group: every budget their requests spend, per level, this period. */
  budgets?: LevelStatus[];
  ledger: { buffered: number; dropped: number; write_failures: number };
}

export interface UsageQuery {
  /** ISO dates (YYYY-MM-DD), UTC; the last 30 days by default. */
  from?: string;
  to?: string;
  /** A group (a class) of the key's tenant: its requests only, and its budgets. */
  group?: string;
}

/** Whose budget: a tenant's (a school), a group's (a class), the learner's share of a group's, a
 * user's (a learner). */
export type BudgetLevelName = "tenant" | "group" | "learner_share" | "user";
export type BudgetPeriod = "day" | "week" | "month" | "term";

/** A level of the budgets: a tenant's, one of its groups', or one of its users'. */
export type BudgetLevelKey =
  | { tenant: string; group?: undefined; user?: undefined }
  | { tenant: string; group: string; user?: undefined }
  | { tenant: string; user: string; group?: undefined };

/** A level's budget: `usd` per `period` (UTC; a term from `start` to `end`, YYYY-MM-DD, included). */
export interface LevelBudget {
  usd: number;
  period?: BudgetPeriod;
  start?: string;
  end?: string;
  /** When it cannot cover a request: a free local model (the default), or a 402. */
  on_exhausted?: "downgrade" | "refuse";
  /** Groups only: what one learner may spend of it per period; else the budget among its active
   * learners. */
  learner_cap_usd?: number;
}

/** One budget in its current period: what is settled, held by requests in flight, and left. */
export interface LevelStatus {
  level: BudgetLevelName;
  tenant: string | null;
  group: string | null;
  user: string | null;
  period: BudgetPeriod;
  start: string;
  end: string;
  limit_usd: number;
  spent_usd: number;
  held_usd: number;
  remaining_usd: number;
  on_exhausted: "downgrade" | "refuse";
}

export interface BudgetLevel {
  level: "tenant" | "group" | "user";
  tenant: string;
  group: string | null;
  user: string | null;
  /** Where the budget in force was set. */
  source: "api" | "config";
  budget: Required<Pick<LevelBudget, "usd" | "period" | "on_exhausted">> & LevelBudget;
  status: LevelStatus[];
}

/** shared: served by an identical request's run in flight; cached: a kept artifact replayed. */
export type Outcome = "success" | "error" | "client_disconnected" | "shared" | "cached" | "stopped";

export interface UsageRecord {
  request_id: string;
  ts: number;
  day: string;
  user_id: string;
  api_key_id: string;
  operation: "chat.completions" | "embeddings" | "generate-content";
  content_type: string | null;
  provider: string | null;
  model: string | null;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
  hosted_equivalent_usd: number;
  savings_usd: number;
  cache_hits: number;
  latency_ms: number;
  outcome: Outcome;
  status: number;
  error_type: string | null;
  fallback_path: string[] | null;
  usage_source: "provider" | "estimated";
  streamed: boolean;
  /** The priority tier the request ran at. */
  tier: Tier;
  /** The request's group (a class), if it named one. */
  group_id: string | null;
  /** Reconnects to the stream's run while it ran (Last-Event-ID). */
  resumes: number;
}

export interface Health { status: "ok" }

export interface Readiness {
  status: "ready" | "not_ready";
  /** Per local model replica and the embedder: "ok" or why not. */
  models: Record<string, string>;
}
