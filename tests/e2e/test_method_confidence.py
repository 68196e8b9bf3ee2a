"""The confidence family: the ``confidence`` method (token confidence, self-certainty,
online stop), DeepConf, self-certainty best-of-N and its Borda vote.

Offline, the tensor functions and the rules equal plain references
(``confidence_references.py``) on random inputs. Through a real server, the
reported statistics equal the reference computed from transformers' logits on
the server's own tokens; a stop happens exactly at the first window whose
group confidence is below the threshold; each rule's choice, made through an
unchanged OpenAI client, equals the reference's on the candidates returned.
"""

from __future__ import annotations

import confidence_references as ref
import numpy as np
import pytest
import torch

from sglang_ilsi import registry
from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.methods.sampling.confidence import self_certainty, token_confidence
from sglang_ilsi.params import validate_params
from sglang_ilsi.selection import Candidate

PROMPT = "def hello(world):"
METER = registry.get("confidence")
STATS = ("tokens", "mean_confidence", "lowest_group_confidence", "tail_confidence",
         "self_certainty", "stopped")


def _rows_of(params: dict, eos: int = 0, max_new_tokens: int | None = None) -> RowContext:
    return RowContext(params=validate_params(METER.params, params), prompt_ids=[1],
                      output_ids=[], eos_token_ids=(eos,), max_new_tokens=max_new_tokens)


def _close(got: dict, want: dict, rel: float) -> None:
    for key in STATS:
        assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-9), key
    assert got.get("stopped_at") == want.get("stopped_at")


# -- offline ------------------------------------------------------------------------------


def test_measures_equal_reference_with_masked_tokens():
    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(3)) * 4
    logits[1, 100:] = float("-inf")  # a grammar mask: only finite entries count
    logits[2, 5:] = float("-inf")  # fewer finite tokens than top_k
    logp = torch.log_softmax(logits, dim=-1)
    got_c = token_confidence(logp, [20, 20, 20, 3])
    got_sc = self_certainty(logp)
    for i, k in enumerate([20, 20, 20, 3]):
        c, sc = ref.token_measures(logits[i].double().numpy(), k)
        assert float(got_c[i]) == pytest.approx(c, rel=1e-5)
        assert float(got_sc[i]) == pytest.approx(sc, rel=1e-5)


@pytest.mark.parametrize("stop_below", [0.0, 5.2])
def test_running_statistics_and_stop_equal_reference(stop_below):
    generator = torch.Generator().manual_seed(11)
    steps = [torch.randn(1, 64, generator=generator) * (1 + 3 * (t % 5 == 0)) for t in range(30)]
    row = _rows_of({"top_k": 8, "window": 4, "stop_below": stop_below}, eos=7)
    stopped_at = None
    for t, step in enumerate(steps):
        out = METER.apply(step.clone(), [row])
        if row.stats.get("stopped"):
            stopped_at = t + 1
            assert torch.isfinite(out[0]).tolist() == [i == 7 for i in range(64)]
            break
        assert torch.equal(out, step)  # measuring never changes the logits
        row.output_ids.append(int(step.argmax()))
    want = ref.trace_statistics([s[0].double().numpy() for s in steps], 8, 4, stop_below)
    _close(row.stats, want, 1e-6)
    assert (stopped_at is not None) == (stop_below > 0)


def test_the_step_after_the_last_token_is_not_measured():
    row = _rows_of({"window": 2}, eos=5, max_new_tokens=3)
    logits = torch.randn(1, 16, generator=torch.Generator().manual_seed(0))
    for token in (1, 5):  # after an end-of-sequence token
        METER.apply(logits.clone(), [row])
        row.output_ids.append(token)
    METER.apply(logits.clone(), [row])
    assert row.stats["tokens"] == 2
    row = _rows_of({"window": 2}, eos=5, max_new_tokens=2)
    for token in (1, 2, 3):  # after max_new_tokens
        METER.apply(logits.clone(), [row])
        row.output_ids.append(token)
    assert row.stats["tokens"] == 2


def _candidates(seed: int, n: int, stopped_share: float = 0.3) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        stats = {"lowest_group_confidence": float(rng.uniform(1, 3)),
                 "tail_confidence": float(rng.uniform(1, 3)),
                 "mean_confidence": float(rng.uniform(1, 3)),
                 "self_certainty": float(rng.uniform(0, 5)),
                 "stopped": float(k >= n // 3 and rng.random() < stopped_share)}
        out.append(Candidate(index=k, text=f"answer {int(rng.integers(0, 3))}",
                             confidence=stats))
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("mode,keep", [("offline", 10.0), ("offline", 90.0),
                                       ("online", 10.0), ("online", 90.0)])
def test_deepconf_equals_reference(seed, mode, keep):
    cands = _candidates(seed, 12)
    rule = registry.get("deepconf")
    params = {"n": 12, "mode": mode, "warmup": 4, "keep_percent": keep}
    got = rule.select(cands, params)
    answers = [c.text.split()[-1] for c in cands]
    weights = [c.confidence["lowest_group_confidence"] for c in cands]
    stopped = [bool(c.confidence["stopped"]) for c in cands]
    position, voters = ref.deepconf(answers, weights, stopped, mode, 4, keep)
    assert (got.position, got.info["voters"]) == (position, voters)


@pytest.mark.parametrize("seed", range(8))
def test_self_certainty_rules_equal_reference(seed):
    cands = _candidates(seed, 10)
    scores = [c.confidence["self_certainty"] for c in cands]
    answers = [c.text.split()[-1] for c in cands]
    assert registry.get("self_certainty").select(cands, {"n": 10}).position == \
        ref.self_certainty_best(scores)
    for power in (0.0, 0.5, 3.0):
        got = registry.get("self_certainty_vote").select(cands, {"n": 10, "power": power})
        assert got.position == ref.self_certainty_vote(answers, scores, power)


# -- through a real server -----------------------------------------------------------------


def _reference_stats(hf, tokens: list[int], params: dict) -> dict:
    prompt = hf.encode(PROMPT)
    rows = [hf.logits(prompt + tokens[:t]) for t in range(len(tokens))]
    return ref.trace_statistics(rows, params["top_k"], params["window"],
                                params.get("stop_below", 0.0))


@pytest.mark.server
def test_statistics_and_stop_equal_transformers(tiny_server, hf):
    params = {"method": "confidence", "top_k": 5, "window": 3}
    out = tiny_server.generate(PROMPT, max_new_tokens=12, ilsi=params)
    tokens = out["output_ids"]
    stats = out["meta_info"]["ilsi"]["stats"]
    _close(stats, _reference_stats(hf, tokens, params), 1e-4)

    # a threshold between the lowest later group and every earlier one: a stop mid-trace
    prompt = hf.encode(PROMPT)
    conf = [ref.token_measures(hf.logits(prompt + tokens[:t]), 5)[0] for t in range(len(tokens))]
    groups = [float(np.mean(conf[t - 3:t])) for t in range(3, len(conf) + 1)]
    drops = [j for j in range(1, len(groups)) if groups[j] < min(groups[:j]) - 1e-3]
    later = drops[0] if drops else 0
    bar = (groups[later] + min(groups[:later])) / 2 if later else groups[0] + 1e-3
    stopped = tiny_server.generate(PROMPT, max_new_tokens=12,
                                   ilsi={**params, "stop_below": bar})
    at = later + 3  # tokens generated when the window ending at step `at` falls below
    report = stopped["meta_info"]["ilsi"]["stats"]
    assert report["stopped"] == 1 and report["stopped_at"] == at
    assert stopped["output_ids"][:at - 1] == tokens[:at - 1]
    assert stopped["output_ids"][at - 1] in hf.eos_ids
    assert stopped["meta_info"]["completion_tokens"] == at
    _close(report, _reference_stats(hf, tokens[:at - 1] + [0], {**params, "stop_below": bar}),
           1e-4)


def _oa_select(tiny_server, ilsi: dict, max_tokens: int = 8) -> dict:
    resp = tiny_server.openai().completions.create(
        model=tiny_server.model, prompt=PROMPT, max_tokens=max_tokens, temperature=1.0,
        extra_body={"custom_params": {"ilsi": ilsi}})
    report = resp.model_extra["ilsi"]
    assert resp.choices[0].text == report["candidates"][report["chosen"]]["text"]
    return report


@pytest.mark.server
def test_deepconf_online_stops_weak_traces_inside_the_server(tiny_server, hf):
    ilsi = {"method": "deepconf", "n": 10, "warmup": 4, "keep_percent": 50, "window": 3,
            "top_k": 5, "extractor": "full_text"}
    # The traces are sampled (SGLang honours no seed on CPU), so a call may stop
    # none of them; up to four calls, until one has a stopped trace to check.
    for _ in range(4):
        report = _oa_select(tiny_server, ilsi, max_tokens=12)
        cands = report["candidates"]
        info = report["selection"]["info"]
        stopped = [k for k, c in enumerate(cands) if c["confidence"]["stopped"]]
        assert info["stopped"] == stopped
        if stopped:
            break
    assert stopped, "no trace was stopped in four calls"
    bar = info["threshold"]
    assert all(k >= 4 for k in stopped)  # warm-up traces run to the end
    for k in stopped:  # each stop is where the reference says, and it saved tokens
        c = cands[k]
        assert c["completion_tokens"] == c["confidence"]["stopped_at"] <= 12
        assert c["output_ids"][-1] in hf.eos_ids
        want = _reference_stats(hf, c["output_ids"][:-1] + [0],
                                {"top_k": 5, "window": 3, "stop_below": bar})
        _close(c["confidence"], want, 1e-4)
    assert min(cands[k]["completion_tokens"] for k in stopped) < 12  # tokens were saved
    answers = [c["text"].strip() or None for c in cands]
    weights = [c["confidence"]["lowest_group_confidence"] for c in cands]
    position, voters = ref.deepconf(answers, weights, [k in stopped for k in range(10)],
                                    "online", 4, 50)
    assert (report["chosen"], info["voters"]) == (position, voters)
    assert bar == pytest.approx(float(np.percentile(weights[:4], 50)))


@pytest.mark.server
def test_self_certainty_rules_through_openai(tiny_server, hf):
    report = _oa_select(tiny_server, {"method": "self_certainty", "n": 5}, max_tokens=4)
    scores = [c["confidence"]["self_certainty"] for c in report["candidates"]]
    assert report["chosen"] == ref.self_certainty_best(scores)
    for c in report["candidates"][:2]:  # the measure is transformers' on the same tokens
        want = _reference_stats(hf, c["output_ids"], {"top_k": 20, "window": 16})
        assert c["confidence"]["self_certainty"] == pytest.approx(want["self_certainty"],
                                                                  rel=1e-4)
    report = _oa_select(tiny_server, {"method": "self_certainty_vote", "n": 6, "power": 1.0,
                                      "extractor": "full_text", "candidates": "typical"},
                        max_tokens=1)
    answers = [c["text"].strip() or None for c in report["candidates"]]
    scores = [c["confidence"]["self_certainty"] for c in report["candidates"]]
    assert report["chosen"] == ref.self_certainty_vote(answers, scores, 1.0)
    assert report["candidates_method"]["then"][0]["method"] == "typical"


@pytest.mark.server
@pytest.mark.parametrize("ilsi,needle", [
    ({"method": "deepconf", "n": 4, "warmup": 4}, "warmup"),
    ({"method": "deepconf", "measure": "tail"}, "measure"),
    ({"method": "deepconf", "keep_percent": 0}, "keep_percent"),
    ({"method": "confidence", "stop_below": -1}, "stop_below"),
    ({"method": "self_certainty_vote", "power": "x"}, "power"),
])
def test_bad_input_is_400(tiny_server, ilsi, needle):
    r = tiny_server.post("/generate", {"text": PROMPT, "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"ilsi": ilsi}}})
    assert r.status_code == 400 and needle in r.text, r.text


@pytest.mark.server
@pytest.mark.parametrize("ilsi", [{"method": "confidence", "stop_below": 3.0},
                                  {"method": "deepconf", "n": 4, "warmup": 2}])
def test_a_stop_cannot_be_combined_with_ignore_eos(tiny_server, ilsi):
    r = tiny_server.post("/generate", {"text": PROMPT, "sampling_params": {
        "max_new_tokens": 2, "ignore_eos": True, "custom_params": {"ilsi": ilsi}}})
    assert r.status_code == 400 and "ignore_eos" in r.text, r.text
    ok = tiny_server.post("/generate", {"text": PROMPT, "sampling_params": {
        "max_new_tokens": 2, "ignore_eos": True, "custom_params": {"ilsi": {
            "method": "deepconf", "n": 4, "mode": "offline"}}}})
    assert ok.status_code == 200, ok.text  # nothing is stopped offline
