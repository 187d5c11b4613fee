// Errors thrown by the client. Service errors mirror the service's tree (core/errors.py) and
// carry its wire fields; the others say what went wrong on the way.
//
//   LearnXError
//   ├── ServiceError                 any error answer of the service (500 server_error)
//   │   ├── InvalidRequestError      400, 404, 410, 413, 422 invalid_request_error
//   │   ├── AuthenticationError      401 authentication_error
//   │   ├── BudgetExceededError      402 budget_exceeded (level, period)
//   │   ├── RateLimitError           429 rate_limit_error
//   │   ├── ConflictError            409 conflict_error (a stopped run: code run_stopped)
//   │   ├── ServiceUnavailableError  503 service_unavailable (tried)
//   │   └── UpstreamError            502 upstream_error
//   │       └── UpstreamTimeoutError 504 timeout_error
//   ├── ConnectionError              the service could not be reached
//   ├── RequestTimeoutError          no answer / no event / idle stream within the client's limit
//   └── ProtocolError                an answer that is not what the service sends (a cut stream)

export class LearnXError extends Error {
  /** The X-Request-Id of the attempt that failed, when one was sent. */
  requestId: string | undefined;

  constructor(message: string, requestId?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.requestId = requestId;
  }
}

export interface ErrorBody {
  type: string;
  message: string;
  code?: string | null;
  param?: string | null;
  tried?: string[];
  level?: string | null;
  period?: string | null;
}

export class ServiceError extends LearnXError {
  readonly status: number;
  readonly type: string;
  readonly code: string | null;
  readonly param: string | null;
  /** From the answer's Retry-After header (429s carry one). */
  readonly retryAfterMs: number | undefined;

  constructor(status: number, body: ErrorBody, requestId?: string, retryAfterMs?: number) {
    super(body.message, requestId);
    this.status = status;
    this.type = body.type;
    this.code = body.code ?? null;
    this.param = body.param ?? null;
    this.retryAfterMs = retryAfterMs;
  }
}

export class InvalidRequestError extends ServiceError {}
export class AuthenticationError extends ServiceError {}
export class BudgetExceededError extends ServiceError {
  /** Whose budget cannot cover the request: tenant, group, learner_share (of a group's), user. */
  readonly level: string | null;
  /** That budget's period: day, week, month, term. */
  readonly period: string | null;

  constructor(status: number, body: ErrorBody, requestId?: string, retryAfterMs?: number) {
    super(status, body, requestId, retryAfterMs);
    this.level = body.level ?? null;
    this.period = body.period ?? null;
  }
}

export class RateLimitError extends ServiceError {}

/** A request with this Idempotency-Key still runs, or the stream's run was stopped (`run_stopped`:
 * it stays stopped). */
export class ConflictError extends ServiceError {}

export class ServiceUnavailableError extends ServiceError {
  /** The provider/model routes the service tried, when every one failed. */
  readonly tried: string[];

  constructor(status: number, body: ErrorBody, requestId?: string, retryAfterMs?: number) {
    super(status, body, requestId, retryAfterMs);
    this.tried = body.tried ?? [];
  }
}

export class UpstreamError extends ServiceError {}
export class UpstreamTimeoutError extends UpstreamError {}

export class ConnectionError extends LearnXError {}

export type TimeoutPhase = "connect" | "first_event" | "idle" | "request";

export class RequestTimeoutError extends LearnXError {
  readonly phase: TimeoutPhase;
  readonly timeoutMs: number;

  constructor(phase: TimeoutPhase, timeoutMs: number, requestId?: string) {
    super(`no ${PHASE_WORDS[phase]} within ${timeoutMs} ms`, requestId);
    this.phase = phase;
    this.timeoutMs = timeoutMs;
  }
}

const PHASE_WORDS: Record<TimeoutPhase, string> = {
  connect: "response from the service",
  first_event: "first event",
  idle: "event since the last one",
  request: "complete answer",
};

export class ProtocolError extends LearnXError {}

type ServiceErrorClass =
  new (status: number, body: ErrorBody, requestId?: string, retryAfterMs?: number) => ServiceError;

const BY_TYPE: Record<string, ServiceErrorClass> = {
  invalid_request_error: InvalidRequestError,
  authentication_error: AuthenticationError,
  budget_exceeded: BudgetExceededError,
  rate_limit_error: RateLimitError,
  conflict_error: ConflictError,
  service_unavailable: ServiceUnavailableError,
  upstream_error: UpstreamError,
  timeout_error: UpstreamTimeoutError,
};

const BY_STATUS: Record<number, ServiceErrorClass> = {
  400: InvalidRequestError, 404: InvalidRequestError, 409: ConflictError, 410: InvalidRequestError,
  413: InvalidRequestError, 422: InvalidRequestError, 401: AuthenticationError, 402: BudgetExceededError,
  429: RateLimitError, 502: UpstreamError, 503: ServiceUnavailableError, 504: UpstreamTimeoutError,
};

/** The typed error for an error answer: by the body's type, else by the HTTP status. */
export function serviceError(status: number, body: ErrorBody, requestId?: string,
                             retryAfterMs?: number): ServiceError {
  const Class = BY_TYPE[body.type] ?? BY_STATUS[status] ?? ServiceError;
  return new Class(status, body, requestId, retryAfterMs);
}

/** The error object of any error answer: `{"error": {...}}` everywhere, and generate-content's
 * error event `{"type": "error", "metadata": {"error": {...}, "status"}}`. */
export function errorBody(payload: unknown, fallback: string): ErrorBody {
  const record = asRecord(payload);
  const error = asRecord(record?.["error"] ?? asRecord(record?.["metadata"])?.["error"]);
  if (error && typeof error["type"] === "string" && typeof error["message"] === "string") {
    return error as unknown as ErrorBody;
  }
  return { type: "server_error", message: fallback };
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined;
}
