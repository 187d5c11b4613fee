// The package's public names, pinned: anything else is private and may change.

import assert from "node:assert/strict";
import { test } from "node:test";

import * as api from "../src/index.js";

test("the package exports the client, its defaults and the error classes, nothing else", () => {
  assert.deepEqual(Object.keys(api).sort(), [
    "AuthenticationError", "BudgetExceededError", "ConflictError", "ConnectionError", "ContentStream",
    "DEFAULT_RESUME", "DEFAULT_RETRY",
    "DEFAULT_TIMEOUTS", "InvalidRequestError", "LearnXClient", "LearnXError", "ProtocolError",
    "PythonAIClient", "RateLimitError", "RequestTimeoutError", "ServiceError", "ServiceUnavailableError",
    "UpstreamError", "UpstreamTimeoutError",
  ]);
  assert.equal(api.PythonAIClient, api.LearnXClient);
});
