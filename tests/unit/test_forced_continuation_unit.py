"""``ilsi.forced_continuation``: the plan reads it, and the logits stage forces each
token and scores it under the chain's distribution and the model's own.

The stage is driven the way SGLang drives it (one ``custom_params`` dict per row, the
request under ``__req__``, the sampled tokens recorded after each step) on synthetic
requests; the reference is the method's own ``apply`` on the same logits."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sglang_ilsi import plan, registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.engine.scheduler import logits_stage
from sglang_ilsi.engine.scheduler import stage_timing as st
from sglang_ilsi.methods.base import RowContext, Rows
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.plan import ENCODED_KEY, FORCED_KEY, MethodChoice

VOCAB = 300


class Tokenizer:
    """Characters as token ids (what ``plan`` calls of a tokenizer)."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert not add_special_tokens
        return [ord(c) for c in text]

    def __len__(self) -> int:
        return VOCAB


def _read(ilsi: Any) -> plan.Plan:
    return plan.read({"ilsi": ilsi}, IlsiConfig(), Tokenizer())


# -- the plan ---------------------------------------------------------------------------

def test_text_and_ids_become_the_chain_s_forced_tokens() -> None:
    chosen = _read({"method": "typical", FORCED_KEY: "ab"})
    assert chosen.kind == plan.LOGITS and chosen.logits.forced == (97, 98)
    assert _read({"method": "typical", FORCED_KEY: [5, 6, 7]}).logits.forced == (5, 6, 7)
    assert _read({"method": "typical"}).logits.forced == ()
    choice = _read({"method": "typical", FORCED_KEY: [5, 6], "then": ["eta"]}).logits
    assert MethodChoice.decode(choice.encode()) == choice


@pytest.mark.parametrize("ilsi, why", [
    ({FORCED_KEY: [1, 2]}, "name one"),
    ({"method": "none", FORCED_KEY: [1, 2]}, "name one"),
    ({"method": "typical", FORCED_KEY: []}, "1 to"),
    ({"method": "typical", FORCED_KEY: [1, -2]}, "token ids"),
    ({"method": "typical", FORCED_KEY: [1, True]}, "token ids"),
    ({"method": "typical", FORCED_KEY: 7}, "token ids"),
    ({"method": "typical", FORCED_KEY: [1] * (plan.MAX_FORCED_TOKENS + 1)}, "1 to"),
    ({"method": "typical", "grammar": "json", FORCED_KEY: [1]}, "grammar"),
    ({"method": "self_consistency", FORCED_KEY: [1]}, "selection method"),
    ({"method": "self_consistency", "candidates": {"method": "typical", FORCED_KEY: [1]}},
     "top level"),
])
def test_bad_forced_continuations_name_the_parameter(ilsi: Any, why: str) -> None:
    with pytest.raises(IlsiRequestError) as e:
        _read(ilsi)
    assert e.value.param.endswith(FORCED_KEY) and why in str(e.value)


def test_a_chained_method_cannot_carry_one() -> None:
    with pytest.raises(IlsiRequestError) as e:
        _read({"method": "typical", "then": [{"method": "eta", FORCED_KEY: [1]}]})
    assert e.value.param == f"then[0].{FORCED_KEY}"


# -- the stage --------------------------------------------------------------------------

def _requests(method: str, forced: list[tuple[int, ...]], temperatures: list[float]
              ) -> list[dict[str, Any]]:
    params = st.method_params(method)
    rows = []
    for continuation, temperature in zip(forced, temperatures, strict=True):
        choice = MethodChoice(method=method, params=params, trace_k=0, source="request",
                              forced=continuation)
        row: dict[str, Any] = {ENCODED_KEY: choice.encode()}
        row["__req__"] = st.fake_request(row, temperature)
        rows.append(row)
    return rows


def _plain_row() -> dict[str, Any]:
    return {"__req__": st.fake_request({}, 0.0)}


def _reference(method: str, logits: torch.Tensor, output: list[int], temperature: float
               ) -> torch.Tensor:
    """The method's distribution for one row (log-probabilities at temperature T, 1 when
    greedy), from its own ``apply`` on a fresh context with the same history (the
    methods tested here keep no state between steps)."""
    cls = registry.get(method)
    ctx = RowContext(params=st.method_params(method), prompt_ids=list(range(1, 17)),
                     output_ids=list(output), temperature=temperature, eos_token_ids=(0,),
                     max_new_tokens=4096)
    rows = Rows()
    rows.append(ctx)
    z = cls.apply(logits[None].clone(), rows)[0]
    t = temperature if temperature > 1e-6 else 1.0
    return torch.log_softmax(z / t, -1)


@pytest.mark.parametrize("method", ["typical", "epsilon", "top_n_sigma"])
def test_each_token_is_forced_and_scored_under_the_method_and_the_model(method: str) -> None:
    forced = [(5, 9, 200, 7), (11, 12, 13, 14), (40, 3, 3, 250)]
    temperatures = [0.0, 1.0, 0.7]
    rows = _requests(method, forced, temperatures)
    batch = [rows[0], _plain_row(), rows[1], rows[2]]
    g = torch.Generator().manual_seed(0)
    expected_method = [0.0] * 3
    expected_model = [0.0] * 3
    impossible = [0] * 3
    for step in range(4):
        logits = torch.randn(len(batch), VOCAB, generator=g) * 3
        reference = [(_reference(method, logits[r], list(forced[k][:step]), temperatures[k]),
                      torch.log_softmax(logits[r] / (temperatures[k] or 1.0), -1))
                     for k, r in enumerate((0, 2, 3))]
        out = logits_stage.apply_methods(logits.clone(), list(batch))
        picked = out.argmax(-1)
        for k, r in enumerate((0, 2, 3)):
            token = forced[k][step]
            assert int(picked[r]) == token
            assert torch.isfinite(out[r]).sum() == 1  # only the forced token is left
            value = float(reference[k][0][token])
            if value == float("-inf"):
                impossible[k] += 1
            else:
                expected_method[k] += value
            expected_model[k] += float(reference[k][1][token])
        assert torch.equal(out[1], logits[1])  # the plain row passes through
        logits_stage.record_tokens(batch, range(len(batch)), picked)
    for k, row in enumerate(rows):
        report = logits_stage.state_of(row).summary["forced"]
        assert report["tokens"] == 4
        assert report["logprob"] == pytest.approx(expected_method[k], abs=1e-4)
        assert report["model_logprob"] == pytest.approx(expected_model[k], abs=1e-4)
        assert report["impossible_tokens"] == impossible[k]
    # the overlap scheduler's extra step after the last token: rows are left alone
    logits = torch.randn(len(batch), VOCAB, generator=g)
    out = logits_stage.apply_methods(logits.clone(), list(batch))
    assert all(logits_stage.state_of(r).summary["forced"]["tokens"] == 4 for r in rows)
    assert torch.isfinite(out[0]).sum() > 1


def test_a_token_the_method_removed_is_counted_impossible() -> None:
    # typical with a tiny mass keeps few tokens: the least likely token is removed
    params = st.method_params("typical")
    params["mass"] = 0.05
    logits = torch.linspace(-5, 5, VOCAB)[None]
    choice = MethodChoice(method="typical", params=params, trace_k=0, source="request",
                          forced=(0,))
    row: dict[str, Any] = {ENCODED_KEY: choice.encode()}
    row["__req__"] = st.fake_request(row, 1.0)
    out = logits_stage.apply_methods(logits.clone(), [row])
    assert int(out.argmax(-1)) == 0
    report = logits_stage.state_of(row).summary["forced"]
    assert report["impossible_tokens"] == 1 and report["logprob"] == 0.0
    assert report["model_logprob"] == pytest.approx(
        float(torch.log_softmax(logits[0], -1)[0]), abs=1e-5)


def test_a_row_without_its_extra_distributions_is_forced_but_not_scored() -> None:
    rows = _requests("cad", [(4, 5)], [0.0])
    batch = st.SyntheticBatch("cad", rows, torch.randn(1, VOCAB))
    batch.fill_inputs()
    state = logits_stage.state_of(rows[0])
    state.ready = False
    out = logits_stage.apply_methods(batch.logits.clone(), list(rows))
    assert int(out.argmax(-1)) == 4 and torch.isfinite(out[0]).sum() == 1
    report = state.summary["forced"]
    assert report["tokens"] == 0 and report["unscored_tokens"] == 1
    assert state.summary["cost"]["steps_without_method"] == 1
