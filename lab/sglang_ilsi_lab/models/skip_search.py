"""Choosing the layers ``SELF_SPECULATIVE``'s draft skips.

Zhang et al. 2024 (Draft & Verify) choose the skipped set S by Bayesian
optimisation of the measured speed on a few prompts. This module does a
deterministic, cheaper stand-in on the CPU: a **greedy search** over S scored
by Leviathan et al.'s speed-up model.

* **Acceptance** α(S): the target's greedy continuations of calibration
  prompts are fed to the target with S skipped (teacher forcing, one forward
  per prompt); α is the share of continuation tokens whose argmax the skipped
  model picks too: the per-token greedy acceptance rate.
* **Expected speed-up** with γ drafts per step (Leviathan et al. 2023, with
  the draft's cost ``c = (L − |S|) / L`` of a target forward)::

      tokens per step  E = (1 − α^(γ+1)) / (1 − α)
      speed-up         E / (γ·c + 1)

* **Search**: start from S = ∅; at each round add the layer (never the first
  or the last) whose skipping keeps α highest; the chosen S is the round with
  the highest expected speed-up. ``L − 2`` rounds of at most ``L − 2``
  candidates each.

``sglang-ilsi self-spec-search --model-path M`` prints the curve as JSON and
the ``--ilsi-self-spec-skip`` value to launch with.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any


def expected_speedup(acceptance: float, steps: int, kept_fraction: float) -> float:
    """Leviathan et al.'s model: expected tokens per step over the step's cost."""
    a = min(max(acceptance, 0.0), 1.0)
    tokens = steps + 1.0 if a >= 1.0 else (1.0 - a ** (steps + 1)) / (1.0 - a)
    return tokens / (steps * kept_fraction + 1.0)


@dataclass(frozen=True)
class Candidate:
    skip: tuple[int, ...]
    acceptance: float
    speedup: float


@contextmanager
def layers_skipped(model: Any, skip: Sequence[int]):
    """A transformers decoder-only model runs without layers ``skip`` inside the block."""
    import torch

    inner = model.model
    layers, config = inner.layers, model.config
    saved = (config.num_hidden_layers, getattr(config, "layer_types", None))
    keep = [i for i in range(len(layers)) if i not in set(skip)]
    inner.layers = torch.nn.ModuleList([layers[i] for i in keep])
    config.num_hidden_layers = len(keep)
    if isinstance(saved[1], list) and len(saved[1]) == len(layers):
        config.layer_types = [saved[1][i] for i in keep]
    try:
        yield model
    finally:
        inner.layers = layers
        config.num_hidden_layers = saved[0]
        if saved[1] is not None:
            config.layer_types = saved[1]


class AcceptanceScorer:
    """α(S) on fixed calibration sequences (prompt + the target's greedy continuation)."""

    def __init__(self, model: Any, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                 eos_token_id: int | None):
        import torch

        self.model = model
        self.sequences: list[tuple[torch.Tensor, int]] = []
        with torch.no_grad():
            for ids in prompt_ids:
                x = torch.tensor([list(ids)])
                out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                     max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                                     pad_token_id=eos_token_id)
                if out.shape[1] > x.shape[1]:
                    self.sequences.append((out[0], x.shape[1]))
        if not self.sequences:
            raise ValueError("the calibration prompts produced no continuation")
        self.tokens = sum(len(s) - p for s, p in self.sequences)

    def acceptance(self, skip: Sequence[int]) -> float:
        import torch

        hits = 0
        with torch.no_grad(), layers_skipped(self.model, skip):
            for seq, start in self.sequences:
                logits = self.model(seq[None, :-1], use_cache=False).logits[0]
                hits += int((logits[start - 1:].argmax(-1) == seq[start:]).sum())
        return hits / self.tokens


def greedy_search(scorer: AcceptanceScorer, layers: int, steps: int,
                  max_skip: int | None = None) -> list[Candidate]:
    """The search curve: the best set of each size, from one skipped layer up."""
    eligible = list(range(1, layers - 1))
    limit = min(len(eligible), max_skip if max_skip is not None else len(eligible))
    skip: tuple[int, ...] = ()
    curve = []
    while len(skip) < limit:
        scored = [(scorer.acceptance(skip + (i,)), i) for i in eligible if i not in skip]
        acceptance, best = max(scored)
        skip = tuple(sorted(skip + (best,)))
        curve.append(Candidate(skip, round(acceptance, 4), round(
            expected_speedup(acceptance, steps, (layers - len(skip)) / layers), 4)))
    return curve


def search(model_path: str, prompts: Sequence[str], steps: int = 3, max_new_tokens: int = 32,
           max_skip: int | None = None) -> dict[str, Any]:
    """Load ``model_path`` with transformers and search; the JSON report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_ilsi.methods.speculative import self_speculative as skip_rule

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    layers = skip_rule.num_layers(model_path)
    if layers < 3:
        raise ValueError(f"{model_path}: {layers} layers leave none to skip but the first and last")
    if tokenizer.chat_template:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
    else:
        texts = list(prompts)
    ids = [tokenizer(t, add_special_tokens=not tokenizer.chat_template)["input_ids"]
           for t in texts]
    scorer = AcceptanceScorer(model, ids, max_new_tokens, tokenizer.eos_token_id)
    curve = greedy_search(scorer, layers, steps, max_skip)
    best = max(curve, key=lambda c: c.speedup)
    default = skip_rule.default_skip(layers)
    default_acceptance = scorer.acceptance(default)
    return {
        "model": model_path, "layers": layers, "steps": steps, "prompts": len(prompts),
        "calibration_tokens": scorer.tokens,
        "chosen": asdict(best),
        "flag": "--ilsi-self-spec-skip " + ",".join(str(i) for i in best.skip),
        "default_rule": {"skip": list(default), "acceptance": round(default_acceptance, 4),
                         "speedup": round(expected_speedup(
                             default_acceptance, steps, (layers - len(default)) / layers), 4)},
        "curve": [asdict(c) for c in curve],
    }
