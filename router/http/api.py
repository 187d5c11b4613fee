"""The HTTP API, built by a factory from its services: OpenAI-compatible /v1/* and the seed's
/api/v1/ai/*. The Serve ingress (router/http/ingress.py) and the in-process tests build it alike."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from core.errors import InvalidRequest, ServiceError, error_response
from router.http.auth import ApiKeyAuth
from router.http.budgets import budget_routes
from router.http.idempotency import Idempotency
from router.http.idempotency_stores import MemoryStore, RedisStore
from router.http.limits import BodyLimit
from router.http.openapi import document
from router.http.openapi import install as install_openapi
from router.http.routes import routes
from router.http.runs import Resume
from router.http.tracing import Traced
from router.services.wiring import Services


def build_api(services: Services) -> FastAPI:
    app = _routed()
    install_openapi(app, auth=services.config.auth.enabled)
    app.state.services = services
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    shared = services.accounting.shared  # the Redis of every replica, when configured
    app.add_middleware(Idempotency, store=RedisStore(shared) if shared else MemoryStore())
    # ^ inside auth (keys are scoped to the caller's API key)
    app.add_middleware(Resume, runs=services.runs)  # a reconnect never reaches Idempotency
    app.add_middleware(BodyLimit, max_bytes=services.config.router.max_body_bytes)
    app.add_middleware(ApiKeyAuth, config=services.config.auth)  # 401 before a body
    if services.tracing is not None:  # outermost: every answer has its span, a 401 too
        app.add_middleware(Traced, tracing=services.tracing)
    return app


def _routed() -> FastAPI:
    app = FastAPI(title="LEARN-X AI service", version="0.1.0")
    app.include_router(routes)
    app.include_router(budget_routes)
    return app


def openapi_document() -> dict[str, Any]:
    """What /openapi.json serves (with auth on); docs/openapi.json is its snapshot
    (`python -m router.http.api`)."""
    return document(_routed())


async def _service_error(_: Request, error: ServiceError) -> JSONResponse:
    return error_response(error)


async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    errors = error.errors()
    return error_response(InvalidRequest(validation_message(errors), param=_first_field(errors)))


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Routing's answers (404 no such route, 405 with the `Allow` header RFC 9110 requires) in the
    one error shape."""
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = _allowed(request) or headers.get("Allow", "")
        message = (f"{request.method} is not allowed on {request.url.path}; "
                   f"allowed: {headers.get('Allow', 'none')}")
        found = InvalidRequest(message, code="method_not_allowed")
    elif error.status_code == 404:
        found = InvalidRequest(f"no route {request.url.path} (the routes: /openapi.json)",
                               code="not_found")
    else:
        found = InvalidRequest(str(error.detail))
    response = error_response(found, headers=headers)
    response.status_code = error.status_code
    return response


def _allowed(request: Request) -> str:
    """Every method of the path (Starlette names the first route's only, and a path such as a
    budget level's has a route per method)."""
    return ", ".join(sorted(_methods(request.app.router.routes, request.scope)))


def _methods(routes: Any, scope: Any) -> set[str]:
    found: set[str] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            found |= _methods(included.routes, scope)
        elif isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            found |= route.methods or set()
    return found


def validation_message(errors: Any) -> str:
    """One readable line per problem, naming the field: `messages: Field required`."""
    lines = []
    for err in errors:
        if err.get("type") == "json_invalid":
            lines.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error')})")
            continue
        loc = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        message = err.get("msg")
        if err.get("type") == "extra_forbidden":
            message = ("not a parameter this service supports; remove it (the README lists the "
                       "supported and advisory parameters of each route)")
        lines.append(f"{loc}: {message}" if loc else f"request body: {message}")
    return "; ".join(lines) or "invalid request"


def _first_field(errors: Any) -> str | None:
    for err in errors:
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        if loc:
            return ".".join(loc)
    return None


if __name__ == "__main__":
    print(json.dumps(openapi_document(), indent=1, sort_keys=True))
