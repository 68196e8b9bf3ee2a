"""The self-speculative draft: the target with chosen layers skipped.

Exactness oracle: the derived folder, loaded by transformers, must give the
same logits as the target itself run with the skipped decoder layers replaced
by the identity (a skipped pre-norm layer passes the residual stream through).
"""

from __future__ import annotations

import json

import pytest
import torch

from sglang_ilsi.engine.speculative import layer_skip, self_speculative
from sglang_ilsi.methods.speculative import self_speculative as skip_rule
from sglang_ilsi_lab.models import tiny


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny4")
    tiny.build(folder, seed=3, num_layers=4)
    return folder


class _Skip(torch.nn.Module):
    """A decoder layer that returns its input hidden states unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@pytest.mark.parametrize("skip", [(1,), (1, 2), (0, 3)])
def test_derived_draft_equals_the_target_with_layers_skipped(four_layers, skip, monkeypatch,
                                                              tmp_path):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("SGLANG_ILSI_CACHE", str(tmp_path))
    draft_dir = layer_skip.derive(four_layers, skip)
    assert json.loads((draft_dir / "config.json").read_text())["num_hidden_layers"] == 4 - len(skip)
    assert json.loads((draft_dir / layer_skip.MARKER).read_text())["skipped"] == list(skip)
    draft = AutoModelForCausalLM.from_pretrained(draft_dir, dtype=torch.float32).eval()
    target = AutoModelForCausalLM.from_pretrained(four_layers, dtype=torch.float32).eval()
    for i in skip:
        target.model.layers[i] = _Skip()
    ids = torch.tensor([[5, 17, 99, 3, 250, 7, 42]])
    with torch.no_grad():
        assert torch.allclose(draft(ids).logits, target(ids).logits, atol=1e-5)
    # cached: a second call returns the same folder without rebuilding
    assert layer_skip.derive(four_layers, skip) == draft_dir


def test_default_skip_keeps_first_and_last():
    assert skip_rule.default_skip(4) == (1,)
    assert skip_rule.default_skip(30) == tuple(range(1, 29, 2))
    assert skip_rule.default_skip(2) == ()


def test_draft_for_uses_the_default_rule(four_layers, monkeypatch, tmp_path):
    monkeypatch.setenv("SGLANG_ILSI_CACHE", str(tmp_path))
    draft = self_speculative.draft_for(str(four_layers), None)
    assert json.loads((draft / layer_skip.MARKER).read_text())["kept"] == [0, 2, 3]


def test_check_skip_messages():
    with pytest.raises(ValueError, match="do not exist"):
        skip_rule.check_skip([4], 4)
    with pytest.raises(ValueError, match="no draft model"):
        skip_rule.check_skip([0, 1], 2)
    with pytest.raises(ValueError, match="no layer to skip"):
        skip_rule.check_skip([], 2)
