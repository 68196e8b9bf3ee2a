"""The multi-distribution methods' batched ``apply`` against the plain
references (``multi_references.py``), on random rows with grammar-style
``-inf`` masks, several rows per batch with different parameters."""

from __future__ import annotations

import multi_references as ref
import numpy as np
import pytest
import torch

from sglang_ilsi import registry
from sglang_ilsi.methods.base import SECOND, Requirements, RowContext, aux_key, layer_key
from sglang_ilsi.params import IlsiRequestError, validate_params

V = 64


def _rows(n: int, seed: int, masked: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, V, generator=g, dtype=torch.float32) * 3
    if masked:
        x[0, :20] = float("-inf")  # a grammar mask on the first row
    return x


def _ctx(method: str, params: dict, inputs: dict) -> RowContext:
    full = validate_params(registry.get(method).params, params)
    return RowContext(params=full, prompt_ids=[1, 2], output_ids=[], inputs=inputs)


def _check(out: torch.Tensor, expected: list[np.ndarray]) -> None:
    for got, want in zip(out.double().numpy(), expected):
        assert np.array_equal(np.isinf(got), np.isinf(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def _apply(method: str, logits: torch.Tensor, contexts: list[RowContext]) -> torch.Tensor:
    return registry.get(method).apply(logits.clone(), contexts)


def test_contrastive_decoding():
    logits, amateur = _rows(3, 0), _rows(3, 1, masked=False)
    params = [{"alpha": 0.1}, {"alpha": 0.5, "amateur_temperature": 0.5}, {"alpha": 0.01}]
    ctxs = [_ctx("contrastive_decoding", p, {aux_key("amateur"): amateur[i]})
            for i, p in enumerate(params)]
    out = _apply("contrastive_decoding", logits, ctxs)
    _check(out, [ref.contrastive_decoding(logits[i].numpy(), amateur[i].numpy(),
                                          c.params["alpha"], c.params["amateur_temperature"])
                 for i, c in enumerate(ctxs)])


def test_contrastive_decoding_beta():
    logits, amateur = _rows(2, 2), _rows(2, 3, masked=False)
    ctxs = [_ctx("contrastive_decoding_beta", {"beta": b}, {aux_key("amateur"): amateur[i]})
            for i, b in enumerate((0.5, 1.5))]
    out = _apply("contrastive_decoding_beta", logits, ctxs)
    _check(out, [ref.contrastive_decoding_beta(logits[i].numpy(), amateur[i].numpy(), 0.1,
                                               c.params["beta"]) for i, c in enumerate(ctxs)])


def test_dexperts_with_expert_anti_expert_or_both():
    logits, a, b = _rows(3, 4), _rows(3, 5, False), _rows(3, 6, False)
    params = [{"expert": "e", "anti_expert": "", "alpha": 2.0},
              {"expert": "", "anti_expert": "a", "alpha": 1.0},
              {"expert": "e", "anti_expert": "a", "alpha": 0.5}]
    ctxs = [_ctx("dexperts", p, {aux_key("e"): a[i], aux_key("a"): b[i]})
            for i, p in enumerate(params)]
    out = _apply("dexperts", logits, ctxs)
    _check(out, [ref.dexperts(logits[i].numpy(), a[i].numpy() if p["expert"] else None,
                              b[i].numpy() if p["anti_expert"] else None, p["alpha"])
                 for i, p in enumerate(params)])


def test_linear_combination():
    logits, a, b = _rows(2, 7), _rows(2, 8, False), _rows(2, 9, False)
    params = {"models": ["a", "b"], "weights": [-0.5, 0.25], "target_weight": 1.5}
    ctxs = [_ctx("linear_combination", params, {aux_key("a"): a[i], aux_key("b"): b[i]})
            for i in range(2)]
    out = _apply("linear_combination", logits, ctxs)
    _check(out, [ref.linear_combination(logits[i].numpy(), [a[i].numpy(), b[i].numpy()],
                                        [-0.5, 0.25], 1.5) for i in range(2)])


@pytest.mark.parametrize("method,params,reference", [
    ("cad", {"alpha": 0.5, "remove": ["x"]}, lambda r, s, p: ref.cad(r, s, p["alpha"])),
    ("instructive_decoding", {"epsilon": 0.3},
     lambda r, s, p: ref.contrast(r, s, p["epsilon"])),
    ("rose", {"alpha": 0.7}, lambda r, s, p: ref.contrast(r, s, p["alpha"])),
    ("pmi_decode", {"lam": 1.0, "top_p": 0.8, "remove": ["x"]},
     lambda r, s, p: ref.pmi_decode(r, s, p["lam"], p["top_p"])),
    ("cfg", {"gamma": 1.5}, lambda r, s, p: ref.cfg(r, s, p["gamma"])),
])
def test_second_context_methods(method, params, reference):
    logits, second = _rows(3, 10), _rows(3, 11, False)
    ctxs = [_ctx(method, params, {SECOND: second[i]}) for i in range(3)]
    out = _apply(method, logits, ctxs)
    _check(out, [reference(logits[i].numpy(), second[i].numpy(), ctxs[i].params)
                 for i in range(3)])


def test_dola_picks_the_most_divergent_layer():
    logits = _rows(2, 12)
    early = {j: _rows(2, 20 + j, False) for j in (0, 2, 4)}
    ctxs = [_ctx("dola", {"layers": [0, 2, 4]}, {layer_key(j): early[j][i] for j in early})
            for i in range(2)]
    out = _apply("dola", logits, ctxs)
    expected = [ref.dola(logits[i].numpy(), {j: early[j][i].numpy() for j in early}, 0.1)
                for i in range(2)]
    _check(out, [e for e, _ in expected])
    for ctx, (_, chosen) in zip(ctxs, expected):
        assert ctx.stats["premature_layer_counts"] == {str(chosen): 1}


def test_sled():
    logits = _rows(2, 13)
    early = {j: _rows(2, 30 + j, False) for j in (1, 3)}
    params = {"layers": [1, 3], "evolution_rate": 2.0, "evolution_scale": 8}
    ctxs = [_ctx("sled", params, {layer_key(j): early[j][i] for j in early}) for i in range(2)]
    out = _apply("sled", logits, ctxs)
    _check(out, [ref.sled(logits[i].numpy(), {j: early[j][i].numpy() for j in early}, 2.0, 8)
                 for i in range(2)])


def test_requirements_declared():
    get = registry.get
    assert get("contrastive_decoding").requirements(
        {"amateur": "small"}) == Requirements(aux_models=("small",))
    assert get("dexperts").requirements(
        {"expert": "e", "anti_expert": ""}) == Requirements(aux_models=("e",))
    assert get("cad").requirements({}) == Requirements(second_context=True)
    assert get("dola").requirements({"layers": [2, 4]}) == Requirements(layers=(2, 4))
    merged = Requirements(aux_models=("a",)).merged(Requirements(layers=(3,), aux_models=("a",)))
    assert merged == Requirements(aux_models=("a",), layers=(3,))


@pytest.mark.parametrize("method,params,needle", [
    ("dexperts", {"expert": "", "anti_expert": ""}, "expert"),
    ("linear_combination", {"models": ["a"], "weights": []}, "weights"),
    ("linear_combination", {"models": []}, "models"),
    ("contrastive_decoding", {"alpha": 0.0}, "alpha"),
    ("cfg", {"gamma": 0.0}, "gamma"),
])
def test_bad_params_name_the_parameter(method, params, needle):
    cls = registry.get(method)
    with pytest.raises(IlsiRequestError) as e:
        cls.prepare(validate_params(cls.params, params), None)
    assert needle in str(e.value)
