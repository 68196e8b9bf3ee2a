"""The speculative bench rows without a server: launch flags, acceptance
metrics, and their place in the grid."""

from __future__ import annotations

import pytest

from sglang_ilsi_lab.bench import runner
from sglang_ilsi_lab.bench import spec as specs
from sglang_ilsi_lab.bench.spec import Generation, SpecError
from sglang_ilsi_lab.bench.specs import speculative as sp
from sglang_ilsi_lab.models import catalog


def test_standalone_rows_launch_with_the_models_draft():
    args = sp.draft_args("lab-target-early")
    assert args[:2] == ["--speculative-algorithm", "STANDALONE"]
    assert args[args.index("--speculative-draft-model-path") + 1] == str(
        catalog.prepare("lab-draft"))
    with pytest.raises(SpecError, match="no same-tokenizer draft"):
        sp.draft_args("gemma3-270m")


def test_acceptance_metrics_come_from_meta_info():
    gen = Generation(text="", output_ids=[], prompt_ids=[], latency_s=0.0,
                     meta={"spec_accept_length": 3.5, "spec_accept_rate": 0.8})
    assert sp.acceptance({}, gen) == {"accept_length": 3.5, "accept_rate": 0.8}
    plain = Generation(text="", output_ids=[], prompt_ids=[], latency_s=0.0, meta={})
    assert sp.acceptance({}, plain) == {}


def test_rows_are_lossless_claims_against_greedy():
    rows = {name: m for name, m in specs.methods().items() if m.family == "speculative"}
    assert set(rows) == {"speculative_standalone", "speculative_ngram", "self_speculative",
                         "lookahead", "speculative_contrastive", "speculative_rest"}
    for name, row in rows.items():
        # speculative contrastive decoding is lossless against contrastive decoding
        first = "contrastive_decoding_beta" if name == "speculative_contrastive" else "greedy"
        assert row.expected_sign == 0 and row.baselines[0] == first
        assert row.temperature == 0.0 and row.published is not None
    on_arithmetic = sorted(name for name, row in rows.items() if "arithmetic" in row.tasks)
    assert set(rows) - set(on_arithmetic) == {"speculative_rest"}  # code completion only
    cells = runner.plan(tasks=["arithmetic"], methods=on_arithmetic, items=4)
    planned = {c.method.name for c in cells if c.model == "lab-target-early"}
    assert planned == set(on_arithmetic) | {"greedy", "contrastive_decoding_beta"}


def test_rest_drafts_from_the_code_completion_store_beside_ngram(monkeypatch, tmp_path):
    from sglang_ilsi_lab.bench.specs import code_completion

    rest = specs.methods()["speculative_rest"]
    assert rest.tasks == ("code_completion",)
    assert rest.baselines == ("greedy", "speculative_ngram")
    assert "code_completion" in specs.methods()["speculative_ngram"].tasks
    # the store kNN-LM and NEST read (built on first use: not here)
    monkeypatch.setattr(code_completion, "store_path", lambda model: tmp_path / model)
    args = rest.server_args_for("smollm2-135m-instruct")
    assert args[args.index("--speculative-algorithm") + 1] == "REST"
    assert args[args.index("--ilsi-rest-datastore") + 1] == str(
        tmp_path / "smollm2-135m-instruct")


def test_speculative_contrastive_verifies_against_the_cd_row():
    cd = specs.methods()["contrastive_decoding_beta"].ilsi_for("arithmetic")
    args = sp.contrastive_args("lab-target-early")
    assert args[args.index("--speculative-draft-model-path") + 1] == str(
        catalog.prepare("lab-draft"))
    assert float(args[args.index("--ilsi-scd-alpha") + 1]) == cd["alpha"]
    assert float(args[args.index("--ilsi-scd-beta") + 1]) == cd["beta"]
