"""llama.cpp engine (llama-cpp-python) for GGUF models.

llama.cpp is not re-entrant: one generation at a time per replica (others wait on a lock), on one
dedicated thread. Tokens are pushed from that thread to the event loop; tokens that are ready together
are coalesced into one delta, because every streamed item costs a hop through Ray."""

from __future__ import annotations

import asyncio
import codecs
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from core.config import LlamaCppSettings
from core.generation import Delta, GenerationParams, PromptTooLong, TokenUsage
from deployments.llm.stops import StopMatcher

_FINISHED = object()


class LlamaCppEngine:
    def __init__(self, model_path: Path, settings: LlamaCppSettings):
        from llama_cpp import Llama  # lazy: the [local] extra

        self._llm = Llama(
            model_path=str(model_path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            n_threads_batch=settings.n_threads,
            n_batch=settings.n_batch,
            n_gpu_layers=settings.n_gpu_layers,
            verbose=False,
        )
        self._settings = settings
        self._format = _chat_formatter(self._llm)
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp")

    def check_health(self) -> None:
        if self._llm is None or self._thread._shutdown:
            raise RuntimeError("llama.cpp engine is closed")

    def prompt_tokens(self, params: GenerationParams) -> list[int]:
        prompt = self._format(messages=params.messages).prompt
        tokens = self._llm.tokenize(prompt.encode(), add_bos=False, special=True)
        if len(tokens) >= self._settings.n_ctx:
            raise PromptTooLong(
                f"the prompt is {len(tokens)} tokens; this model's context is "
                f"{self._settings.n_ctx} tokens: shorten the messages")
        return tokens

    async def generate(self, params: GenerationParams) -> AsyncIterator[Delta]:
        tokens = self.prompt_tokens(params)
        async with self._lock:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            cancel = threading.Event()

            def emit(item: Any) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, item)

            work = loop.run_in_executor(self._thread, self._run, tokens, params, cancel, emit)
            try:
                while True:
                    items = [await queue.get()]
                    while not queue.empty():
                        items.append(queue.get_nowait())
                    for error in (i for i in items if isinstance(i, BaseException)):
                        raise error
                    deltas = [i for i in items if i is not _FINISHED]
                    if deltas:
                        yield _merge(deltas)
                    if _FINISHED in items:
                        return
            finally:
                cancel.set()
                await asyncio.wait([work])  # hold the lock until llama.cpp has really stopped

    def _run(self, tokens: list[int], params: GenerationParams, cancel: threading.Event,
             emit: Callable[[Any], None]) -> None:
        try:
            for delta in self._decode(tokens, params, cancel):
                emit(delta)
        except Exception as error:  # surfaces in generate() on the event loop
            emit(error)
        emit(_FINISHED)

    def _decode(self, tokens: list[int], params: GenerationParams,
                cancel: threading.Event) -> Iterator[Delta]:
        from llama_cpp import llama_cpp as lib

        budget = min(params.max_tokens, self._settings.n_ctx - len(tokens))
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(params.stop)
        if params.seed is not None:
            self._llm.set_seed(params.seed)
        generated, counted, finish_reason, hit_stop = 0, 0, "length", False
        for token in self._llm.generate(
            tokens, temp=params.temperature, top_p=params.top_p,
            repeat_penalty=self._settings.repeat_penalty, grammar=_grammar(params),
        ):
            if cancel.is_set():
                finish_reason = "cancelled"
                break
            if lib.llama_vocab_is_eog(self._llm._model.vocab, token):
                finish_reason = "stop"
                break
            generated += 1
            text, hit_stop = stops.feed(utf8.decode(self._llm.detokenize([token])))
            if text:  # tokens whose text is held back (a possible stop) count with the next text
                yield Delta(text, tokens=generated - counted)
                counted = generated
            if hit_stop:
                finish_reason = "stop"
                break
            if generated >= budget:
                break
        tail = "" if hit_stop else stops.feed(utf8.decode(b"", final=True))[0] + stops.flush()
        yield Delta(tail, finish_reason=finish_reason, usage=TokenUsage(len(tokens), generated))


def _merge(deltas: list[Delta]) -> Delta:
    last = deltas[-1]
    return Delta("".join(d.text for d in deltas), last.finish_reason, last.usage,
                 sum(d.tokens or 0 for d in deltas))


def _grammar(params: GenerationParams) -> Any:
    if params.json_schema is None:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if params.json_schema:
        return LlamaGrammar.from_json_schema(json.dumps(grammar_schema(params.json_schema)),
                                             verbose=False)
    return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


MAX_GRAMMAR_LENGTH = 300  # longer `maxLength` bounds make llama.cpp refuse the grammar


def grammar_schema(schema: Any) -> Any:
    """The schema in the terms llama.cpp's grammar enforces: long string maximum lengths dropped (it
    expands `{1,2000}` into a grammar it refuses, and aborts), small integer ranges as enums (it
    ignores minimum/maximum). The full schema is still checked when the output is validated."""
    if isinstance(schema, list):
        return [grammar_schema(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    low, high = schema.get("minimum"), schema.get("maximum")
    if schema.get("type") == "integer" and low is not None and high is not None and high - low <= 32:
        return {"enum": list(range(low, high + 1))}
    return {k: grammar_schema(v) for k, v in schema.items()
            if k != "maxLength" or v <= MAX_GRAMMAR_LENGTH}


def _chat_formatter(llm: Any) -> Any:
    """The GGUF's own chat template, as llama-cpp-python would build it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("this GGUF has no chat template (a base model?): it cannot serve chat")
    eos, bos = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
    )
