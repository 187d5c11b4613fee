"""Prompt caching on purpose: what a class of requests shares, and how each hosted provider is told.

The shared prefix is what every learner of a class sends alike and before anything of their own:
the tools and the leading system messages (the system prompt, the lesson, the template). Anthropic
caches only where a request places `cache_control` breakpoints: one goes at the end of the shared
prefix when it is long enough to be cached (`min_tokens`, estimated on the high side; a breakpoint
before the provider's own minimum is ignored by it and costs nothing). OpenAI caches every prompt's
prefix by itself; a `prompt_cache_key` derived from the shared prefix routes a class's requests to the
same cache. A caller's own breakpoints and key are passed on as they are."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core.generation import GenerationParams
from core.pricing import estimate_tokens

EPHEMERAL = {"type": "ephemeral"}
MAX_BREAKPOINTS = 4  # Anthropic's limit per request


def shared_prefix(params: GenerationParams) -> str:
    """The tools' definitions and the leading system messages, as one text."""
    tools = [[t.name, t.description, t.parameters] for t in params.tools]
    system = []
    for message in params.messages:
        if message["role"] != "system":
            break
        system.append(str(message["content"]))
    return json.dumps(tools, sort_keys=True) + "\n" + "\n\n".join(system) if system or tools else ""


def worth_caching(params: GenerationParams, min_tokens: int) -> bool:
    return params.prompt_cache and estimate_tokens(shared_prefix(params)) >= min_tokens


def prefix_digest(params: GenerationParams) -> str | None:
    """The shared prefix's digest, or None when the request has none or turns caching off."""
    prefix = shared_prefix(params)
    if not prefix or not params.prompt_cache:
        return None
    return hashlib.sha256(prefix.encode()).hexdigest()[:32]


def prompt_cache_key(params: GenerationParams, min_tokens: int) -> str | None:
    """The caller's key, else one derived from the shared prefix when it is worth caching."""
    if params.prompt_cache_key is not None:
        return params.prompt_cache_key
    digest = prefix_digest(params)
    return f"lx-{digest}" if digest is not None and worth_caching(params, min_tokens) else None


def control(ttl: str) -> dict[str, Any]:
    return EPHEMERAL if ttl == "5m" else {**EPHEMERAL, "ttl": ttl}


def split_text(text: str, message: int, params: GenerationParams) -> list[dict[str, Any]]:
    """A message's text as text blocks, cut where the caller placed breakpoints in it."""
    points = sorted((b for b in params.cache_breakpoints if b.message == message),
                    key=lambda b: b.offset)
    if not points:
        return [{"type": "text", "text": text}]
    blocks, start = [], 0
    for point in points:
        if point.offset > start:
            blocks.append({"type": "text", "text": text[start:point.offset],
                           "cache_control": control(point.ttl)})
            start = point.offset
    if start < len(text) or not blocks:
        blocks.append({"type": "text", "text": text[start:]})
    return blocks


def breakpoints(request: dict[str, Any]) -> int:
    """The cache_control breakpoints a Messages request carries."""
    found = [b for b in request.get("tools", []) if "cache_control" in b]
    system = request.get("system")
    found += [b for b in system if "cache_control" in b] if isinstance(system, list) else []
    for turn in request["messages"]:
        content = turn["content"]
        found += [b for b in content if "cache_control" in b] if isinstance(content, list) else []
    return len(found)


def mark_shared_prefix(request: dict[str, Any], params: GenerationParams,
                       min_tokens: int | None) -> dict[str, Any]:
    """`request` with a breakpoint at the end of its shared prefix (its system, else its last
    tool), when that is worth caching and a breakpoint is left."""
    if min_tokens is None or not worth_caching(params, min_tokens) \
            or breakpoints(request) >= MAX_BREAKPOINTS:
        return request
    system = request.get("system")
    if system:
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
        if "cache_control" not in blocks[-1]:
            blocks = [*blocks[:-1], {**blocks[-1], "cache_control": EPHEMERAL}]
        return {**request, "system": blocks}
    tools = request.get("tools")
    if tools and "cache_control" not in tools[-1]:
        return {**request, "tools": [*tools[:-1], {**tools[-1], "cache_control": EPHEMERAL}]}
    return request
