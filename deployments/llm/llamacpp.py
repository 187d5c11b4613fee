"""llama.cpp engine (llama-cpp-python) for GGUF models.

A replica serves `parallel` requests at once with continuous batching (deployments/llm/batching.py)
over one llama.cpp context of its own, with a slot and n_ctx tokens of KV cache per request;
requests beyond them wait in the replica's queue. Prompts are turned into tokens and schemas into
grammars here, on the event loop, before a request is queued: what cannot be served is refused
before it takes a slot. Deltas that are ready together are coalesced into one, because every
streamed item costs a hop through Ray."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from core.config import LLAMA_MAX_SEQUENCES, LlamaCppSettings
from core.generation import (
    Delta,
    EngineLoad,
    GenerationParams,
    InvalidMessages,
    InvalidSchema,
    InvalidTools,
    PromptTooLong,
    RawPromptTooLong,
    RequestRejected,
)
from core.schema import SchemaError, check_schema, rewrite_subschemas
from deployments.llm.batching import Scheduler
from deployments.llm.jobs import Request, merge_ready
from deployments.llm.output import merge
from deployments.llm.toolcalls import call_schema, text_messages


class LlamaCppEngine:
    def __init__(self, model_path: Path, settings: LlamaCppSettings):
        from llama_cpp import Llama  # lazy: the [local] extra

        threads = settings.n_threads or max(multiprocessing.cpu_count() // 2, 1)
        # The model, its tokenizer and template; its own small context is not used for decoding.
        self._llm = Llama(model_path=str(model_path), n_ctx=64, n_batch=64, n_threads=threads,
                          n_gpu_layers=settings.n_gpu_layers, verbose=False)
        self._settings = settings
        self._vocab = _vocab(self._llm)
        self._format = _chat_formatter(self._llm)
        self._ctx = _context(self._llm, settings, threads)
        self._scheduler = Scheduler(self._llm.model, self._ctx, parallel=settings.parallel,
                                    n_batch=settings.n_batch, max_queued=settings.max_queued,
                                    detokenize=lambda t: self._llm.detokenize([t]),
                                    repeat_penalty=settings.repeat_penalty,
                                    reserved=settings.assessment_slots,
                                    prefill_chunk=settings.prefill_chunk,
                                    parked=_parked(settings))

    def check_health(self) -> None:
        if not self._scheduler.alive():
            raise RuntimeError("llama.cpp engine is closed or its decoding thread died")

    def load(self) -> EngineLoad:
        return self._scheduler.load()

    def close(self) -> None:
        from llama_cpp import llama_cpp as lib

        self._scheduler.close()
        lib.llama_free(self._ctx)

    def prompt_tokens(self, params: GenerationParams) -> list[int]:
        """The chat as the model's template renders it, or a raw prompt as it is: its text is text
        (special tokens spelled in it are not parsed), after the model's BOS token if it has one."""
        if params.prompt is not None:
            tokens = self._llm.tokenize(utf8(params.prompt, "the prompt"), add_bos=True,
                                        special=False)
        else:
            text = render_prompt(self._format, text_messages(params))
            tokens = self._llm.tokenize(text, add_bos=False, special=True)
        if len(tokens) >= self._settings.n_ctx:
            raw = params.prompt is not None
            raise (RawPromptTooLong if raw else PromptTooLong)(
                f"the prompt is {len(tokens)} tokens; this model's context is "
                f"{self._settings.n_ctx} tokens: shorten the {'prompt' if raw else 'messages'}")
        return tokens

    def grammar(self, params: GenerationParams) -> str | None:
        """The grammar (GBNF) that constrains the output (a required tool call, or JSON), which
        llama.cpp has compiled once without complaint: a schema it refuses is the caller's error
        here, before sampling (llama.cpp would crash the process there)."""
        from llama_cpp.llama_grammar import JSON_GBNF

        if params.required_tools():
            for tool in params.required_tools():
                _checked(tool.parameters, InvalidTools, f"tools.{tool.name}.parameters")
            return self._compiled(call_schema(params), InvalidTools, "tools")
        if params.json_schema is None:
            return None
        if not params.json_schema:
            return str(JSON_GBNF)
        _checked(params.json_schema, InvalidSchema, "response_format.json_schema")
        return self._compiled(params.json_schema, InvalidSchema, "response_format.json_schema")

    def _compiled(self, schema: dict[str, Any], error: type[RequestRejected], what: str) -> str:
        from llama_cpp import llama_cpp as lib
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        refused = error(f"{what}: llama.cpp cannot build a grammar for this schema; simplify it "
                        "(fewer repetitions, patterns anchored ^...$)")
        try:  # the converter's input is the caller's schema alone: its failures are the caller's
            rules = json_strings(json_schema_to_gbnf(json.dumps(grammar_schema(schema))))
        except Exception:
            raise refused from None
        if len(rules) > MAX_GRAMMAR_BYTES:
            raise error(f"{what}: its grammar would be {len(rules)} bytes; this model takes at "
                        f"most {MAX_GRAMMAR_BYTES}: use fewer or smaller repetition counts "
                        "(maxItems, maxLength, minItems)")
        compiled = lib.llama_sampler_init_grammar(self._vocab, rules.encode(), b"root")
        if not compiled:
            raise refused
        lib.llama_sampler_free(compiled)
        return rules

    async def generate(self, params: GenerationParams) -> AsyncIterator[Delta]:
        tokens, grammar = self.prompt_tokens(params), self.grammar(params)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        request = Request(tokens, params, grammar, _seed(params.seed),
                          emit=lambda item: loop.call_soon_threadsafe(queue.put_nowait, item),
                          budget=min(params.max_tokens, self._settings.n_ctx - len(tokens)))
        self._scheduler.submit(request)
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                deltas, error, finished = merge_ready(items)
                if error is not None:
                    raise error
                if deltas:
                    yield merge(deltas)
                if finished:
                    return
        finally:
            request.cancel()  # a closed stream frees its slot before the next decoding step


def _context(llm: Any, settings: LlamaCppSettings, threads: int) -> Any:
    """A context of its own over the loaded model: a KV cache of n_ctx per slot, unified so that
    slots share the cells of a common prefix."""
    from llama_cpp import llama_cpp as lib

    params = lib.llama_context_default_params()
    params.n_ctx = settings.n_ctx * settings.parallel
    params.n_batch = params.n_ubatch = settings.n_batch
    params.n_seq_max = settings.parallel + _parked(settings)
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = True
    params.no_perf = True
    ctx = lib.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context (out of memory?)")
    return ctx


def _parked(settings: LlamaCppSettings) -> int:
    """Sequences beside the slots that keep prefixes waiting requests want: as configured (checked
    against llama.cpp's most sequences), else one a slot, as many as fit."""
    if settings.parked_prefixes is not None:
        return settings.parked_prefixes
    return min(settings.parallel, LLAMA_MAX_SEQUENCES - settings.parallel)


def _checked(schema: dict[str, Any], error: type[RequestRejected], what: str) -> None:
    try:
        check_schema(schema)
    except SchemaError as problem:
        raise error(f"{what}: {problem}") from None


def render_prompt(formatter: Any, messages: list[dict[str, str]]) -> bytes:
    """The conversation as the model's prompt, in UTF-8. The template rendered a plain
    conversation at start-up (`_chat_formatter`): what fails here is this conversation."""
    try:
        prompt: str = formatter(messages=messages).prompt
    except Exception as error:  # the template's raise_exception(), or its Jinja errors
        raise InvalidMessages(f"this model's chat template refuses these messages ({error}): "
                              "check the order of their roles") from None
    return utf8(prompt, "the messages")


def utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as error:
        raise InvalidMessages(f"{what}: text that is not valid Unicode "
                              f"({error.reason}): send UTF-8 text") from None


def _seed(seed: int | None) -> int:
    """llama.cpp's seed for a request: LLAMA_DEFAULT_SEED draws a fresh random one per sampler; a
    caller's seed maps into the other 32-bit values, so that the same seed samples the same text."""
    from llama_cpp import llama_cpp as lib

    return lib.LLAMA_DEFAULT_SEED if seed is None else seed % lib.LLAMA_DEFAULT_SEED


MAX_GRAMMAR_LENGTH = 300  # longer `maxLength` bounds make llama.cpp refuse the grammar
# llama.cpp compiles ~6 MB of grammar a second here (twice per request: checked, then sampled);
# the bounds of core.schema still allow ~1 MB (many properties with the largest counts).
MAX_GRAMMAR_BYTES = 256_000


def grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A checked schema in the terms llama.cpp's grammar enforces: long string maximum lengths
    dropped (it expands `{1,2000}` into a grammar it refuses), small integer ranges as enums (it
    ignores minimum/maximum). The full schema is still checked when the output is validated."""
    return rewrite_subschemas(schema, _enforceable)


def _enforceable(node: dict[str, Any]) -> dict[str, Any]:
    low, high = node.get("minimum"), node.get("maximum")
    if node.get("type") == "integer" and isinstance(low, int) and isinstance(high, int) \
            and 0 <= high - low <= 32:
        return {"enum": list(range(low, high + 1))}
    if node.get("maxLength", 0) > MAX_GRAMMAR_LENGTH:
        return {k: v for k, v in node.items() if k != "maxLength"}
    return node


# A character of a JSON string. llama-cpp-python's converter allows raw control characters (a
# newline), which JSON forbids: the model's strings would not parse.
JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def json_strings(rules: str) -> str:
    return "\n".join(JSON_CHAR if line.startswith("char ::= ") else line
                     for line in rules.splitlines())


def _chat_formatter(llm: Any) -> Any:
    """The GGUF's own chat template, as llama-cpp-python would build it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("this GGUF has no chat template (a base model?): it cannot serve chat")
    eos, bos = llm.token_eos(), llm.token_bos()
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(llm, eos) if eos != -1 else "",
        bos_token=_token_text(llm, bos) if bos != -1 else "",
    )
    formatter(messages=[{"role": "user", "content": "Hello"}])  # a template that cannot: fail now
    return formatter


def _vocab(llm: Any) -> Any:
    """The model's vocabulary, through llama.cpp's public C API (not llama-cpp-python's internals)."""
    from llama_cpp import llama_cpp as lib

    return lib.llama_model_get_vocab(llm.model)


def _token_text(llm: Any, token: int) -> str:
    from llama_cpp import llama_cpp as lib

    return bytes(lib.llama_vocab_get_text(_vocab(llm), token)).decode("utf-8", errors="replace")
