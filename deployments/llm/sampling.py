"""One sequence's sampler over llama.cpp's C API: its own chain (repeat penalty, top-k, top-p,
min-p, temperature, and a seeded draw or greedy), its own grammar, its own random state.

A grammar is checked the way llama.cpp's own server does it: the token is drawn without the grammar
first and only when the grammar refuses it is the whole vocabulary filtered by the grammar and the
token drawn again. Filtering 49k tokens against every parse of a grammar is what costs; most tokens
of a constrained answer are accepted as drawn.

The logits are copied out of the context first, so sampling never reads the context while the
next batch is decoded."""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

# llama.cpp's llama_token_data: {int32 id; float logit; float p}
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
TOP_K, MIN_P, PENALTY_LAST_N = 40, 0.05, 64  # llama-cpp-python's defaults, as before batching


class GrammarRefused(ValueError):
    """llama.cpp could not build the grammar's sampler."""


class Sampler:
    def __init__(self, vocab: Any, n_vocab: int, *, temperature: float, top_p: float,
                 repeat_penalty: float, seed: int, grammar: str | None):
        from llama_cpp import llama_cpp as lib

        self._lib = lib
        self._chain = _chain(lib, n_vocab, temperature, top_p, repeat_penalty, seed)
        self._grammar = None
        if grammar is not None:
            self._grammar = lib.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not self._grammar:
                lib.llama_sampler_free(self._chain)
                raise GrammarRefused("llama.cpp refused the grammar")
        self._n_vocab = n_vocab
        self._candidates = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._one = np.zeros(1, dtype=_TOKEN_DATA)

    def sample(self, ctx: Any, index: int) -> int:
        """The next token from the logits of batch position `index`, accepted by the chain and
        the grammar."""
        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(ctx, index),
                                       shape=(self._n_vocab,))
        token = self._draw(logits, constrained=False)
        if self._grammar is not None and not self._allowed(token):
            token = self._draw(logits, constrained=True)
        self._lib.llama_sampler_accept(self._chain, token)
        if self._grammar is not None:
            self._lib.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        self._lib.llama_sampler_free(self._chain)
        if self._grammar is not None:
            self._lib.llama_sampler_free(self._grammar)
        self._grammar = None

    def _draw(self, logits: np.ndarray[Any, Any], constrained: bool) -> int:
        data = self._candidates
        data["id"] = self._ids
        data["logit"] = logits
        data["p"] = 0.0
        array = _array(self._lib, data)
        if constrained:
            self._lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        self._lib.llama_sampler_apply(self._chain, ctypes.byref(array))
        return int(data["id"][array.selected])

    def _allowed(self, token: int) -> bool:
        self._one["id"], self._one["logit"], self._one["p"] = token, 0.0, 0.0
        array = _array(self._lib, self._one)
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return not math.isinf(float(self._one["logit"][0]))


def _array(lib: Any, data: np.ndarray[Any, Any]) -> Any:
    pointer = data.ctypes.data_as(ctypes.POINTER(lib.llama_token_data))
    return lib.llama_token_data_array(data=pointer, size=len(data), selected=-1, sorted=False)


def _chain(lib: Any, n_vocab: int, temperature: float, top_p: float, repeat_penalty: float, seed: int) -> Any:
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    add = lib.llama_sampler_chain_add
    add(chain, lib.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, repeat_penalty, 0.0,
                                                    0.0))
    if temperature == 0:
        add(chain, lib.llama_sampler_init_greedy())
        return chain
    add(chain, lib.llama_sampler_init_top_k(TOP_K))
    add(chain, lib.llama_sampler_init_top_p(top_p, 1))
    add(chain, lib.llama_sampler_init_min_p(MIN_P, 1))
    add(chain, lib.llama_sampler_init_temp(temperature))
    add(chain, lib.llama_sampler_init_dist(seed))
    return chain
