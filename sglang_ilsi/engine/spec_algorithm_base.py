"""The base of the plugin's registered speculative algorithms (SGLang 0.5.23).

``SpeculativeAlgorithm.register(name, spec_class=...)`` is SGLang's supported
way to add an algorithm; ``spec_class`` must subclass ``CustomSpecAlgo``.
SGLang 0.5.23's scheduler also calls ``need_topk``,
``carries_draft_hidden_states`` and ``create_future_map`` on the algorithm,
which the built-in enum answers and ``CustomSpecAlgo`` does not (a plugin
algorithm without them crashes the scheduler). :func:`plugin_algorithm_base`
adds them, answering from the subclass's ``is_*`` predicates as the built-ins
do, so ``SELF_SPECULATIVE`` (``is_standalone``) and ``LOOKAHEAD``
(``is_ngram``) only say which built-in path they take.
"""

from __future__ import annotations

from functools import cache
from typing import Any


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
