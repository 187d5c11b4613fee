"""vLLM's AsyncLLM as deployments/llm/vllm.py uses it (get_tokenizer, generate with cumulative
outputs and a priority, abort, errored), without a GPU: a request's answer tokens come when the test
releases them, or on their own every `step_s` seconds. VLLMEngine takes it with a `sampling` that
keeps vLLM's sampling arguments as a dict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from core.config import LocalModelConfig, VLLMSettings
from deployments.llm.vllm import VLLMEngine
from models import find_local_model


class FakeTokenizer:
    def apply_chat_template(self, conversation: list[dict[str, Any]], tokenize: bool,
                            add_generation_prompt: bool, tools: Any = None) -> str:
        return "".join(f"<{m['role']}> {m['content']} " for m in conversation) + "<assistant>"

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))


@dataclass
class FakeRequest:
    request_id: str
    prompt: str
    sampling: dict[str, Any]
    priority: int
    released: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    def release(self, tokens: int = 1) -> None:
        """Let `tokens` more answer tokens out (they come as one output, as a step vLLM's output
        loop fell behind on)."""
        self.released.put_nowait(tokens)


class FakeAsyncLLM:
    def __init__(self, step_s: float | None = None):
        self.step_s = step_s  # None: tokens come only when released
        self.requests: list[FakeRequest] = []
        self.aborted: list[str] = []
        self.errored = False

    async def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    async def generate(self, prompt: str, sampling: dict[str, Any], request_id: str,
                       priority: int = 0) -> AsyncIterator[Any]:
        request = FakeRequest(request_id, prompt, sampling, priority)
        self.requests.append(request)
        budget, sent = sampling["max_tokens"], 0
        while sent < budget:
            if self.step_s is None:
                sent = min(budget, sent + await request.released.get())
            else:
                await asyncio.sleep(self.step_s)
                sent += 1
            choice = SimpleNamespace(text=" w" * sent, token_ids=list(range(sent)),
                                     finish_reason="length" if sent == budget else None)
            yield SimpleNamespace(prompt_token_ids=FakeTokenizer().encode(prompt),
                                  outputs=[choice])

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def keep_arguments(kwargs: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    return {**kwargs, "json": schema}


def fake_vllm(settings: VLLMSettings, clock: Callable[[], float],
              step_s: float | None = None) -> tuple[VLLMEngine, FakeAsyncLLM]:
    fake = FakeAsyncLLM(step_s)
    return VLLMEngine(find_local_model("smollm2-135m"), settings, fake, keep_arguments,
                      clock), fake


def fake_vllm_engine(config: LocalModelConfig, models_path: str | None) -> VLLMEngine:
    """An LLMServer engine_factory: the model's vLLM settings over a fake that answers a token
    every 10 ms."""
    fake = FakeAsyncLLM(step_s=0.01)
    return VLLMEngine(find_local_model(config.name), config.vllm, fake, keep_arguments)
