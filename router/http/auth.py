"""Service API keys: callers (the Node backend) send `Authorization: Bearer <key>` or `X-API-Key`.

Keys are configured only as SHA-256 hashes (API keys are long random strings, so a plain hash is
enough; no password hashing is needed) and every configured hash is compared in constant time.
Every route but liveness and readiness needs a key; the caller's key is put in the ASGI scope's
state for the ledger, rate limits and roles: a `service` key calls the AI API and reads usage one
user at a time, an `admin` key also reads every user's usage and resets breakers.
`python -m router.http.auth new-key NAME [admin]` makes a key."""

from __future__ import annotations

import hashlib
import secrets
import sys

from starlette.types import ASGIApp, Receive, Scope, Send

from core.config import ApiKeyConfig, AuthConfig, KeyRole
from core.errors import AuthenticationFailed, PermissionDenied, error_response

# The routes open without a key (probes); the OpenAPI document (router/http/openapi.py) says so too.
OPEN_PATHS = ("/health", "/ready", "/api/v1/ai/health", "/api/v1/ai/ready")
# Who calls when auth is disabled (local development): allowed everything.
DEV_KEY = ApiKeyConfig(id="dev", sha256="0" * 64, role="admin")


def require_admin(key: ApiKeyConfig, what: str) -> None:
    """PermissionDenied unless `key` is an admin key; `what` says what needed it."""
    if key.role != "admin":
        raise PermissionDenied(f"{what} needs an admin key; the key {key.id!r} is a service key")


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class ExposedWithoutAuth(RuntimeError):
    """The API would listen beyond loopback with authentication off."""


def check_exposure(config: AuthConfig, host: str | None) -> None:
    """Auth off is for local development: refuse to serve it on other interfaces, where anyone on
    the network could spend the provider keys and read every user's usage."""
    if not config.enabled and (host or "0.0.0.0") not in LOOPBACK:
        raise ExposedWithoutAuth(
            f"the API listens on {host or 'every interface'} with auth disabled: set "
            "http_options.host: 127.0.0.1 for local development, or turn auth on "
            "(auth.api_keys / LEARNX_API_KEYS)")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, keys: list[ApiKeyConfig]):
        self._keys = keys

    def identify(self, presented: str) -> ApiKeyConfig | None:
        digest = hash_key(presented)
        found = None
        for key in self._keys:  # no early exit: the time taken does not depend on which matched
            if secrets.compare_digest(digest, key.sha256):
                found = key
        return found


def presented_key(scope: Scope) -> str | None:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key or None


class ApiKeyAuth:
    """Pure ASGI middleware: 401 in the error shape before anything else runs. Every scope but
    lifespan needs a key (a websocket without one is closed with 1008)."""

    def __init__(self, app: ASGIApp, config: AuthConfig):
        self.app = app
        self.enabled = config.enabled
        self.keys = KeyRing(config.api_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # startup and shutdown: no request
            await self.app(scope, receive, send)
            return
        key = DEV_KEY
        if self.enabled and _path(scope) not in OPEN_PATHS:
            presented = presented_key(scope)
            found = self.keys.identify(presented) if presented else None
            if found is None and scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # policy violation
                return
            if found is None:
                await self._reject(presented is None)(scope, receive, send)
                return
            key = found
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)

    @staticmethod
    def _reject(missing: bool) -> ASGIApp:
        message = ("missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key'"
                   if missing else "invalid API key")
        error = AuthenticationFailed(message, code="missing_api_key" if missing else "invalid_api_key")
        return error_response(error, headers={"WWW-Authenticate": "Bearer"})


def _path(scope: Scope) -> str:
    """The path inside the app (Serve mounts the app under a route prefix, given as root_path)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


def new_key(name: str, role: KeyRole = "service") -> tuple[str, str]:
    """A fresh key and the config entry that admits it."""
    key = f"lx_{secrets.token_urlsafe(32)}"
    return key, f"- id: {name}\n  sha256: {hash_key(key)}" + (
        f"\n  role: {role}" if role != "service" else "")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] != "new-key" or sys.argv[3:] not in ([], ["admin"]):
        sys.exit("usage: python -m router.http.auth new-key NAME [admin]")
    secret, entry = new_key(sys.argv[2], "admin" if sys.argv[3:] else "service")
    print(f"key (give it to the caller; it is not stored): {secret}\n\nauth.api_keys entry:\n{entry}")
