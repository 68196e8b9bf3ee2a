"""Monitor-guided decoding without a server: the static module inspection, the
allow-list, and the token mask (checked against a brute-force reference)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from monitor_reference import allowed_tokens
from monitor_reference import monitor as reference

from sglang_ilsi import monitors, registry
from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.methods.constrained.phrases import decode_keywords
from sglang_ilsi.params import IlsiRequestError, validate_params
from sglang_ilsi_lab.models import tiny

METHOD = registry.get("monitor")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny.ensure()))


def prepared(tokenizer, **given):
    return METHOD.prepare(validate_params(METHOD.params, given), tokenizer)


def test_names_from_source():
    src = ("__all__ = ['a', 'b']\n__all__ += ['c']\n__all__.extend(['d'])\n"
           "__all__.append('e')\ndef hidden(): pass\n")
    assert monitors.names_from_source(src) == ("a", "b", "c", "d", "e")
    src = ("import os\nfrom x import y as z, _w\nX = 1\n_private = 2\nclass K: pass\n"
           "async def f(): pass\nif True:\n    nested = 1\n")
    assert monitors.names_from_source(src) == ("K", "X", "f", "z")


def test_module_names_are_read_statically():
    import json

    assert set(monitors.module_names("json")) == set(json.__all__)
    assert "join" in monitors.module_names("os.path")  # a frozen module: read from its file
    for bad in ("math", "no_such_module_xyz", "os;rm", ""):
        with pytest.raises(monitors.ModuleNotReadable):
            monitors.module_names(bad)


def test_only_allow_listed_modules(monkeypatch):
    assert "subprocess" not in monitors.allowed_modules()
    with pytest.raises(IlsiRequestError, match="ilsi.argument: module 'subprocess' is not allowed"):
        monitors.PythonModuleMonitor.continuations("subprocess")
    import json as json_module

    from sglang_ilsi.config import ENV_CONFIG

    monkeypatch.setenv(ENV_CONFIG, json_module.dumps({"monitor_modules": ["textwrap"]}))
    assert monitors.allowed_modules() == ("textwrap",)
    with pytest.raises(IlsiRequestError):
        monitors.PythonModuleMonitor.continuations("json")


def test_prepare_bad_input(tokenizer):
    with pytest.raises(IlsiRequestError, match="ilsi.argument"):
        prepared(tokenizer)
    with pytest.raises(IlsiRequestError, match="ilsi.monitor"):
        prepared(tokenizer, monitor="linter", argument="json")
    with pytest.raises(IlsiRequestError, match="ilsi.argument"):
        prepared(tokenizer, argument="os")  # not in the default allow-list


def _row(params, prompt, output):
    return RowContext(params=params, prompt_ids=list(prompt), output_ids=list(output))


def test_mask_after_the_trigger(tokenizer):
    params = prepared(tokenizer, argument="json")
    names = [s for k in decode_keywords(params["name_token_ids"]) for s in k]
    prompt = tokenizer.encode("import json\nx = json.", add_special_tokens=False)
    vocab = len(tokenizer)
    logits = torch.randn(1, vocab)
    row = _row(params, prompt, [])
    out = METHOD.apply(logits.clone(), [row])
    allowed = {int(i) for i in torch.nonzero(torch.isfinite(out[0])).flatten()}
    assert allowed == {n[0] for n in names}
    assert torch.equal(out[0][sorted(allowed)], logits[0][sorted(allowed)])
    # follow one name (no other name is a prefix of it) to its end: each step
    # allows its continuation and masks the rest
    name = tokenizer.encode("JSONEncoder", add_special_tokens=False)
    for k in range(1, len(name)):
        row = _row(params, prompt, name[:k])
        finite = torch.isfinite(METHOD.apply(logits.clone(), [row])[0])
        assert finite[name[k]]
        assert not finite.all()
    # a complete name: released ("dump" is complete although "dumps" continues it)
    for done in ("JSONEncoder", "dump"):
        row = _row(params, prompt, tokenizer.encode(done, add_special_tokens=False))
        assert torch.equal(METHOD.apply(logits.clone(), [row]), logits)
    row = _row(params, prompt, name)
    assert torch.equal(METHOD.apply(logits.clone(), [row]), logits)
    assert row.stats["masked_steps"] == 0  # a fresh row per step in this test


def test_no_trigger_no_mask(tokenizer):
    params = prepared(tokenizer, argument="json")
    logits = torch.randn(2, len(tokenizer))
    rows = [_row(params, tokenizer.encode("print(1)", add_special_tokens=False), []),
            _row(params, tokenizer.encode("x = json.", add_special_tokens=False),
                 tokenizer.encode("zzz", add_special_tokens=False))]  # left the names
    assert torch.equal(METHOD.apply(logits.clone(), rows), logits)


def test_grammar_conflict_leaves_the_row(tokenizer):
    params = prepared(tokenizer, argument="json")
    names = [s for k in decode_keywords(params["name_token_ids"]) for s in k]
    prompt = tokenizer.encode("x = json.", add_special_tokens=False)
    logits = torch.randn(1, len(tokenizer))
    logits[0, sorted({n[0] for n in names})] = float("-inf")  # a grammar forbids every name
    row = _row(params, prompt, [])
    assert torch.equal(METHOD.apply(logits.clone(), [row]), logits)
    assert row.stats["conflicts"] == 1.0


@pytest.mark.parametrize("argument,trigger", [("json", ""), ("os.path", ""),
                                              ("re", ":"), ("string", "string.")])
def test_mask_equals_brute_force_reference(tokenizer, argument, trigger):
    params = prepared(tokenizer, argument=argument, trigger=trigger)
    triggers = [s for k in decode_keywords(params["trigger_token_ids"]) for s in k]
    names = [s for k in decode_keywords(params["name_token_ids"]) for s in k]
    rng = random.Random(7)
    vocab = len(tokenizer)
    rows, histories = [], []
    for _ in range(64):
        # histories built from triggers, name prefixes and random tokens
        h: list[int] = []
        for _ in range(rng.randint(1, 4)):
            pick = rng.random()
            if pick < 0.4:
                h += list(rng.choice(triggers))
            elif pick < 0.8:
                n = rng.choice(names)
                h += list(n[:rng.randint(1, len(n))])
            else:
                h += [rng.randrange(vocab) for _ in range(rng.randint(1, 3))]
        split = rng.randint(0, len(h))
        rows.append(_row(params, h[:split], h[split:]))
        histories.append(h)
    logits = torch.randn(len(rows), vocab)
    out = METHOD.apply(logits.clone(), rows).numpy()
    constrained = 0
    for i, h in enumerate(histories):
        expected = reference(logits[i].numpy(), h[:0], h, triggers, names)
        assert np.array_equal(np.isfinite(out[i]), np.isfinite(expected)), i
        assert np.allclose(out[i][np.isfinite(out[i])], expected[np.isfinite(expected)])
        constrained += allowed_tokens(h, triggers, names) is not None
    assert constrained >= 10  # the histories exercise the mask
