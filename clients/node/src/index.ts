// The public surface; everything else is private to the package.

export {
  ContentStream, DEFAULT_RESUME, DEFAULT_RETRY, DEFAULT_TIMEOUTS, LearnXClient, LearnXClient as PythonAIClient,
} from "./client.js";
export type { ClientOptions, ResumePolicy, RunStatus, StreamParams, WholeParams } from "./client.js";
export {
  AuthenticationError, BudgetExceededError, ConflictError, ConnectionError, InvalidRequestError, LearnXError,
  ProtocolError, RateLimitError, RequestTimeoutError, ServiceError, ServiceUnavailableError,
  UpstreamError, UpstreamTimeoutError,
} from "./errors.js";
export type { ErrorBody, TimeoutPhase } from "./errors.js";
export type { CallOptions, RetryEvent, RetryPolicy, Timeouts } from "./transport.js";
export type * from "./types.js";
