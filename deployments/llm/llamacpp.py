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
from core.generation import (
    Delta,
    GenerationParams,
    InvalidMessages,
    InvalidSchema,
    InvalidTools,
    PromptTooLong,
    RawPromptTooLong,
    RequestRejected,
    TokenUsage,
)
from core.schema import SchemaError, check_schema, rewrite_subschemas
from deployments.llm.stops import StopMatcher
from deployments.llm.toolcalls import (
    ToolCallStream,
    call_schema,
    joined,
    text_messages,
    to_calls,
)

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
        self._vocab = _vocab(self._llm)
        self._format = _chat_formatter(self._llm)
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp")

    def check_health(self) -> None:
        if self._llm is None or self._thread._shutdown:
            raise RuntimeError("llama.cpp engine is closed")

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

    def grammar(self, params: GenerationParams) -> Any:
        """The grammar that constrains the output (a required tool call, or JSON), compiled by
        llama.cpp now: a schema it refuses is the caller's error here, before sampling (llama.cpp
        would crash the process there)."""
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if params.required_tools():
            for tool in params.required_tools():
                _checked(tool.parameters, InvalidTools, f"tools.{tool.name}.parameters")
            return self._compiled(call_schema(params), InvalidTools, "tools")
        if params.json_schema is None:
            return None
        if not params.json_schema:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        _checked(params.json_schema, InvalidSchema, "response_format.json_schema")
        return self._compiled(params.json_schema, InvalidSchema, "response_format.json_schema")

    def _compiled(self, schema: dict[str, Any], error: type[RequestRejected], what: str) -> Any:
        """The grammar of a checked schema, which llama.cpp has compiled once without complaint."""
        from llama_cpp import llama_cpp as lib
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

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
        return LlamaGrammar.from_string(rules, verbose=False)

    async def generate(self, params: GenerationParams) -> AsyncIterator[Delta]:
        tokens, grammar = self.prompt_tokens(params), self.grammar(params)
        async with self._lock:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            cancel = threading.Event()

            def emit(item: Any) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, item)

            work = loop.run_in_executor(self._thread, self._run, tokens, params, grammar, cancel,
                                        emit)
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

    def _run(self, tokens: list[int], params: GenerationParams, grammar: Any,
             cancel: threading.Event, emit: Callable[[Any], None]) -> None:
        try:
            for delta in self._decode(tokens, params, grammar, cancel):
                emit(delta)
        except Exception as error:  # surfaces in generate() on the event loop
            emit(error)
        emit(_FINISHED)

    def _decode(self, tokens: list[int], params: GenerationParams, grammar: Any,
                cancel: threading.Event) -> Iterator[Delta]:
        from llama_cpp import llama_cpp as lib

        budget = min(params.max_tokens, self._settings.n_ctx - len(tokens))
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # A required call is JSON under a grammar: stop sequences would only cut it short.
        calls = ToolCallStream() if params.required_tools() else None
        stops = StopMatcher([] if calls else params.stop)
        self._llm.set_seed(_seed(params.seed))  # every request: llama.cpp keeps the last one
        generated, counted, finish_reason, hit_stop = 0, 0, "length", False
        for token in self._llm.generate(
            tokens, temp=params.temperature, top_p=params.top_p,
            repeat_penalty=self._settings.repeat_penalty, grammar=grammar,
        ):
            if cancel.is_set():
                finish_reason = "cancelled"
                break
            if lib.llama_vocab_is_eog(self._vocab, token):
                finish_reason = "stop"
                break
            generated += 1
            text, hit_stop = stops.feed(utf8.decode(self._llm.detokenize([token])))
            delta = _delta(text, calls, generated - counted)
            if delta is not None:  # tokens whose text is held back count with the next delta
                yield delta
                counted = generated
            if hit_stop:
                finish_reason = "stop"
                break
            if generated >= budget:
                break
        tail = "" if hit_stop else stops.feed(utf8.decode(b"", final=True))[0] + stops.flush()
        last = Delta(tail, finish_reason=finish_reason, usage=TokenUsage(len(tokens), generated))
        yield last if calls is None else to_calls(last, calls)


def _delta(text: str, calls: ToolCallStream | None, tokens: int) -> Delta | None:
    """What `text` adds to the answer (as text, or to its tool call), or None: nothing yet."""
    if calls is None:
        return Delta(text, tokens=tokens) if text else None
    delta = to_calls(Delta(text, tokens=tokens), calls)
    return delta if delta.tool_calls else None


def _merge(deltas: list[Delta]) -> Delta:
    last = deltas[-1]
    return Delta("".join(d.text for d in deltas), last.finish_reason, last.usage,
                 sum(d.tokens or 0 for d in deltas),
                 joined([c for d in deltas for c in d.tool_calls]))


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
