"""The declaration shape of a speculative algorithm."""

from __future__ import annotations

from typing import ClassVar

from sglang_ilsi.declaration import Method


class SpeculativeAlgorithm(Method):
    """A speculative algorithm: lossless (greedy outputs equal plain greedy decoding,
    sampled outputs follow the target's distribution); chosen per server."""

    needs: ClassVar[frozenset[str]] = frozenset({"draft"})
    # Under speculative decoding SGLang skips the logits stage, so logits methods
    # are refused; selection rules may still sample plain candidates.
    composes_with: ClassVar[frozenset[str]] = frozenset({"selection", "grammar"})
    # the value of --speculative-algorithm
    algorithm: ClassVar[str]
    # the launch flags that configure it (beside SGLang's --speculative-* flags)
    flags: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def launch(cls) -> str:
        return " ".join(["--speculative-algorithm", cls.algorithm, *cls.flags])
