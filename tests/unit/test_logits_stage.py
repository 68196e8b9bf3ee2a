"""The logits stage's kept layouts and parameter tensors (issue #17), its sync-free
paths, and ``scripts/gpu_check.sh`` on a machine without CUDA.

The stage is driven the way SGLang drives it (one ``custom_params`` dict per row,
the request under ``__req__``) on synthetic requests
(:mod:`sglang_ilsi.engine.scheduler.stage_timing`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from sglang_ilsi.engine.scheduler import logits_stage
from sglang_ilsi.engine.scheduler import stage_timing as st
from sglang_ilsi.methods import common
from sglang_ilsi.methods.base import RowContext, Rows, column, scaled
from sglang_ilsi.methods.sampling import eta, typical

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 5000


def _mixed(names: list[str], per: int = 3, vocab: int = VOCAB) -> st.SyntheticBatch:
    """One batch whose rows come from several methods' synthetic batches."""
    parts = [st.make_batch(name, per, vocab, mask_every=2, seed=i) for i, name in enumerate(names)]
    params = [p for b in parts for p in b.params_list]
    order = list(range(len(params)))[::2] + list(range(len(params)))[1::2]  # interleave
    logits = torch.cat([b.logits for b in parts])[order]
    return st.SyntheticBatch("mixed", [params[i] for i in order], logits)


def _run(batch: st.SyntheticBatch, apply: Any, steps: int = 3) -> list[torch.Tensor]:
    outs = []
    for _ in range(steps):
        out = apply(batch.logits.clone(), list(batch.params_list))
        outs.append(out)
        logits_stage.record_tokens(batch.params_list, range(len(batch.params_list)),
                                   out.argmax(dim=-1))
    return outs


def _stats(batch: st.SyntheticBatch) -> list[Any]:
    return [logits_stage.state_of(p, create=False).summary["stats"] for p in batch.params_list]


@pytest.mark.parametrize("names", [["typical"], ["epsilon", "top_h", "mirostat"],
                                   ["penalty_decoding", "cad", "look_back", "eta"]])
def test_kept_layouts_equal_rebuilt_stage(names: list[str]) -> None:
    kept, rebuilt = _mixed(names), _mixed(names)
    for a, b in zip(_run(kept, logits_stage.apply_methods), _run(rebuilt, st.apply_rebuilt),
                    strict=True):
        assert torch.equal(a, b)
    assert _stats(kept) == _stats(rebuilt)


def test_layout_and_parameter_tensors_are_kept_until_the_batch_changes() -> None:
    batch = st.make_batch("epsilon", 4, VOCAB)
    params = batch.params_list
    logits_stage.apply_methods(batch.logits, list(params))
    layout = logits_stage._layouts.get(params)
    group = layout.levels[0][0]
    tensors = dict(group.contexts._tensors)
    assert {key[0] for key in tensors} == {"param", "temperature"}
    logits_stage.apply_methods(batch.logits, list(params))
    assert logits_stage._layouts.get(list(params)) is layout  # a new list, the same rows
    assert all(group.contexts._tensors[k] is t for k, t in tensors.items())
    # a request finished: a new layout for the remaining rows, with their own tensors
    out = logits_stage.apply_methods(batch.logits[1:], params[1:])
    assert logits_stage._layouts.get(params[1:]) is not layout
    assert out.shape == (3, VOCAB)
    steps = [logits_stage.state_of(p).summary["cost"]["steps"] for p in params]
    assert steps == [2, 3, 3, 3]


def test_rows_in_a_middle_prefill_chunk_or_waiting_are_left_out() -> None:
    batch = _mixed(["epsilon", "cad"], per=2)
    params = batch.params_list
    logits_stage.apply_methods(batch.logits.clone(), list(params))
    chunked = params[0]["__req__"]
    chunked.extend_end = 3  # short of its 16 prompt tokens
    waiting = next(logits_stage.state_of(p) for p in params if logits_stage.state_of(p).companions)
    waiting.ready = False
    out = logits_stage.apply_methods(batch.logits.clone(), list(params))
    assert torch.equal(out[0], batch.logits[0])  # passed through unchanged
    assert waiting.summary["cost"]["steps_without_method"] == 1
    assert logits_stage.state_of(params[0]).summary["cost"]["steps"] == 1
    chunked.extend_end, waiting.ready = 16, True  # the kept layout again, every row
    logits_stage.apply_methods(batch.logits.clone(), list(params))
    assert logits_stage.state_of(params[0]).summary["cost"]["steps"] == 2
    assert waiting.summary["cost"]["steps"] == 2


def test_column_and_scaled_from_rows_equal_plain_lists() -> None:
    rows = [RowContext(params={"a": 0.5 * i, "k": i + 1}, prompt_ids=[1], output_ids=[],
                       temperature=t) for i, t in enumerate((0.0, 0.7, 1.3))]
    like = torch.randn(3, 7)
    kept = Rows(rows)
    for _ in range(2):
        assert torch.equal(column(kept, "a", like), column(rows, "a", like))
        assert column(kept, "k", like, dtype=torch.int64).dtype == torch.int64
        assert torch.equal(column(kept, "k", like, dtype=torch.int64),
                           torch.tensor([[1], [2], [3]]))
        assert torch.equal(scaled(like, kept), scaled(like, rows))
    assert len(kept._tensors) == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_truncate_without_sync_equals_truncate(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 300, generator=g)
    scores = logits / 0.7
    threshold = torch.tensor([[-9.0], [0.5], [9.0], [1.0], [99.0], [2.0]])  # rows 2, 4: empty
    keep = scores > threshold
    rows = [RowContext(params={}, prompt_ids=[], output_ids=[]) for _ in range(6)]
    rows2 = [RowContext(params={}, prompt_ids=[], output_ids=[]) for _ in range(6)]
    expected = common.truncate(logits, keep.clone(), scores, rows)
    got = common._truncate_on_device(logits, keep.clone(), scores, rows2)
    assert torch.equal(got, expected)
    assert [r.stats for r in rows] == [r.stats for r in rows2]


def test_deferred_stats_are_read_with_the_tokens(monkeypatch) -> None:
    rows = [RowContext(params={}, prompt_ids=[], output_ids=[]) for _ in range(3)]
    # as on an accelerator: the values stay pending until the tokens are read
    monkeypatch.setattr(common._scratch, "pending",
                        [(rows, "kept_tokens", torch.tensor([3, 1, 2], dtype=torch.int32))],
                        raising=False)
    assert rows[0].stats == {}
    tokens = common.flush_stats(torch.tensor([7, 8]))
    assert tokens == [7, 8] and all(isinstance(t, int) for t in tokens)
    assert [r.stats["kept_tokens"] for r in rows] == [3.0, 1.0, 2.0]
    assert common.flush_stats() is None


def test_device_paths_of_typical_and_eta_keep_the_same_sets(monkeypatch) -> None:
    """On an accelerator typical ranks every row in full and eta computes the entropy
    with ``entr``: on the CPU the same choices give the same outputs."""
    cases = {"typical": (typical, "PREFILTER", ()), "eta": (eta, "_EXACT_VOCAB", 10 ** 9)}
    for name, (module, attr, device_value) in cases.items():
        batch = st.make_batch(name, 6, 20000, mask_every=3)
        rows = [logits_stage.state_of(p).steps[0][1] for p in batch.params_list]
        cls = st._method(name)
        expected = cls.apply(batch.logits, rows)
        with monkeypatch.context() as m:
            m.setattr(module, attr, device_value)
            assert torch.equal(cls.apply(batch.logits, rows), expected), name


def test_gpu_check_compares_devices_and_falls_back_on_cpu() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    for name in ("typical", "epsilon", "cad"):  # the CUDA comparison, CPU against CPU
        assert gpu_check.compare_method(name, "cpu", vocab=2048, steps=2)["ok"], name
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the fallback is not what would run")
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu_check.sh"), "--methods", "typical,min_p,cfg",
         "--batches", "8", "--vocab", "4096", "--steps", "3"],
        capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["result"] == "no CUDA: CPU fallback" and report["ok"]
    assert set(report["equality"]) == {"typical", "min_p", "cfg"}
    assert report["stage_cost"]["probe"]["8"]["host_us"] > 0


def test_adaptive_device_path_equals_its_cpu_path() -> None:
    """Adaptive's accelerator path (every row ranked in full, one scatter, counts
    deferred) gives the CPU path's outputs and stats."""
    cls = st._method("adaptive")
    batch = st.make_batch("adaptive", 6, 20000, mask_every=3)
    rows = [logits_stage.state_of(p).steps[0][1] for p in batch.params_list]
    expected = cls.apply(batch.logits, rows)
    stats = [dict(r.stats) for r in rows]
    for r in rows:
        r.stats.clear()
    s = scaled(batch.logits, rows)
    n_vocab = (s.shape[-1] - torch.isneginf(s).sum(dim=-1, keepdim=True)).double()
    got = cls._ranked_on_device(batch.logits, s, n_vocab, column(rows, "epsilon", n_vocab), rows)
    assert torch.equal(got, expected)
    assert [r.stats for r in rows] == stats


# Methods whose step reads nothing back from the device (no host-device sync on a GPU).
SYNC_FREE = ("adaptive", "cad", "cfg", "contrastive_decoding", "contrastive_decoding_beta",
             "dexperts", "epsilon", "eta", "instructive_decoding", "keyword_boost",
             "keyword_decay", "length_target", "linear_combination", "min_p",
             "penalty_decoding", "pmi_decode", "rose", "top_h", "top_n_sigma", "typical")


@pytest.mark.parametrize("name", SYNC_FREE)
def test_stage_reads_nothing_back_from_the_device(name: str) -> None:
    assert st.device_read(name) is None
    assert st.device_read(st.StageProbe) is None
