"""The SELF_SPECULATIVE skip-set search (``lab/sglang_ilsi_lab/models/skip_search.py``)."""

from __future__ import annotations

import json

import pytest
import torch

from sglang_ilsi import cli
from sglang_ilsi.engine.speculative import layer_skip
from sglang_ilsi_lab.models import catalog, skip_search


def test_expected_speedup_is_leviathans_model():
    # all drafts accepted: gamma + 1 tokens for gamma draft forwards of cost c plus one verify
    assert skip_search.expected_speedup(1.0, 3, 0.5) == pytest.approx(4 / 2.5)
    assert skip_search.expected_speedup(0.0, 3, 0.5) == pytest.approx(1 / 2.5)
    a = 0.8
    assert skip_search.expected_speedup(a, 4, 0.25) == pytest.approx(
        (1 - a ** 5) / (1 - a) / 2.0)
    values = [skip_search.expected_speedup(x / 10, 3, 0.5) for x in range(11)]
    assert values == sorted(values)


class FakeScorer:
    """Acceptance falls by the sum of per-layer costs."""

    cost = {1: 0.30, 2: 0.02, 3: 0.05, 4: 0.01, 5: 0.20}

    def acceptance(self, skip):
        return 1.0 - sum(self.cost[i] for i in skip)


def test_greedy_search_adds_the_cheapest_layer_each_round():
    curve = skip_search.greedy_search(FakeScorer(), layers=7, steps=3)
    assert [c.skip for c in curve] == [(4,), (2, 4), (2, 3, 4), (2, 3, 4, 5), (1, 2, 3, 4, 5)]
    assert [c.acceptance for c in curve] == [0.99, 0.97, 0.92, 0.72, 0.42]
    assert skip_search.greedy_search(FakeScorer(), layers=7, steps=3, max_skip=2)[-1].skip == (2, 4)


def test_skipping_in_place_is_the_derived_draft():
    """What the search scores is the model SELF_SPECULATIVE serves for that set."""
    from transformers import AutoModelForCausalLM

    target = catalog.prepare("lab-target")
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    derived = AutoModelForCausalLM.from_pretrained(layer_skip.derive(target, (2,)),
                                                   dtype=torch.float32).eval()
    ids = torch.tensor([[20, 21, 22, 23, 11, 24, 25, 29]])
    with torch.no_grad(), skip_search.layers_skipped(model, (2,)):
        skipped = model(ids, use_cache=False).logits
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        torch.testing.assert_close(skipped, derived(ids, use_cache=False).logits)
    assert not torch.allclose(skipped, full)
    assert len(model.model.layers) == model.config.num_hidden_layers == 4  # restored


def test_cli_prints_the_flag_to_launch_with(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Q: 23+45-12=?\\nA:\nQ: 7*8+1=?\\nA:\nQ: 90-41+3=?\\nA:\n")
    rc = cli.main(["self-spec-search", "--model-path", str(catalog.prepare("lab-target")),
                   "--prompts-file", str(prompts), "--max-new-tokens", "8"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layers"] == 4 and report["prompts"] == 3
    chosen = report["chosen"]["skip"]
    assert chosen and set(chosen) <= {1, 2}
    assert report["flag"] == "--ilsi-self-spec-skip " + ",".join(map(str, chosen))
    assert [len(c["skip"]) for c in report["curve"]] == [1, 2]
    assert 0.0 <= report["default_rule"]["acceptance"] <= 1.0
    assert cli.main(["self-spec-search", "--model-path", str(tmp_path / "none")]) == 2
