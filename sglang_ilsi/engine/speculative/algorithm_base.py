"""The base of the plugin's registered speculative algorithms (SGLang 0.5.23).

``SpeculativeAlgorithm.register(name, spec_class=...)`` is SGLang's supported
way to add an algorithm; ``spec_class`` must subclass ``CustomSpecAlgo``.
SGLang 0.5.23's scheduler also calls ``need_topk``,
``carries_draft_hidden_states`` and ``create_future_map`` on the algorithm,
which the built-in enum answers and ``CustomSpecAlgo`` does not (a plugin
algorithm without them crashes the scheduler). :func:`plugin_algorithm_base`
adds them, answering from the subclass's ``is_*`` predicates as the built-ins
do, so ``SELF_SPECULATIVE`` and ``SPECULATIVE_CONTRASTIVE`` (``is_standalone``)
and ``LOOKAHEAD`` (``is_ngram``) only say which built-in path they take:
:func:`register_algorithm` does the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any, Literal


@cache
def plugin_algorithm_base() -> type:
    from sglang.srt.speculative.spec_registry import CustomSpecAlgo

    class PluginSpecAlgo(CustomSpecAlgo):
        def need_topk(self) -> bool:
            return self.is_eagle() or self.is_standalone()

        def carries_draft_hidden_states(self) -> bool:
            return self.is_eagle()

        def create_future_map(self, device: Any, req_to_token_pool: Any,
                              needs_cpu_seq_lens: bool = True,
                              needs_confidence_relay: bool = False) -> Any:
            from sglang.srt.managers.overlap_utils import FutureMap

            return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens,
                             needs_confidence_relay)

    return PluginSpecAlgo


# The predicates that put a plugin algorithm on one of SGLang's built-in paths.
_PATHS: dict[str, dict[str, bool]] = {
    "standalone": {"is_standalone": True},  # a draft model with its own KV cache
    "ngram": {"is_ngram": True, "has_draft_kv": False},  # tree verify, no draft model
}


def register_algorithm(name: str, path: Literal["standalone", "ngram"],
                       handle_server_args: Callable[[Any], None], worker: str) -> None:
    """Register ``--speculative-algorithm name`` in this process (idempotent).

    ``path`` names the built-in path the algorithm takes, ``handle_server_args``
    adjusts (or refuses) the launch flags, and ``worker`` names the worker class
    as ``"module:Class"``, imported only when SGLang builds the worker (the
    worker modules import SGLang's speculative workers, which every process
    need not load).
    """
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from sglang.srt.speculative.spec_registry import get_spec

    if get_spec(name) is not None:
        return
    namespace: dict[str, Any] = {
        predicate: (lambda self, answer=answer: answer)
        for predicate, answer in _PATHS[path].items()}
    namespace["handle_server_args"] = lambda self, server_args: handle_server_args(server_args)
    namespace["__doc__"] = f"{name}: SGLang's {path} path with the plugin's launch handling."
    spec_class = type("".join(w.title() for w in name.split("_")), (plugin_algorithm_base(),),
                      namespace)
    SpeculativeAlgorithm.register(name, supports_overlap=True, spec_class=spec_class)(
        lambda server_args: _load_class(worker))


def _load_class(path: str) -> type:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
