"""The HTTP wing: the Serve ingress, the FastAPI app and its routes, the OpenAPI document, API keys,
request limits and idempotency. It imports every other wing and nothing imports it (but
deployments.app)."""
