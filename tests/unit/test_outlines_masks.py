"""Cached outlines masks (``engine/scheduler/outlines_masks.py``) equal SGLang's own.

The touch point is installed the way a server installs it (``patches.install``
with ``--grammar-backend outlines`` in the config), in a fresh interpreter, and
the patched ``OutlinesGrammar.fill_vocab_mask`` is compared with SGLang's
original on SGLang's own outlines backend over the embedded tiny model's
tokenizer: a random walk through a broad regex and a JSON schema, each state's
row filled twice (a miss, then a hit) into a batch row other than 0.
"""

from __future__ import annotations

import subprocess
import sys

from sglang_ilsi.config import IlsiConfig, parse
from sglang_ilsi.engine import patches

_CHECK = r"""
import json, random, sys
from sglang_ilsi.engine.cpu import portability
portability.activate()  # first thing, as the plugin does in every SGLang process
import torch
from transformers import AutoTokenizer
from sglang.srt.constrained import outlines_backend as ob
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.engine import patches
from sglang_ilsi.engine.scheduler import outlines_masks

# Held in a dict: SGLang's HookRegistry rebinds every module-level name that
# refers to a patched function, this script's globals included.
sglang_own = {"fill": ob.OutlinesGrammar.fill_vocab_mask}
installed = patches.install(IlsiConfig(grammar_backend="outlines"), patches.WORKER)
assert patches.OUTLINES_FILL in installed
patched = ob.OutlinesGrammar.fill_vocab_mask
assert patched is not sglang_own["fill"] and patched.__wrapped__ is sglang_own["fill"]
original = sglang_own["fill"]

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
backend = ob.OutlinesGrammarBackend(tokenizer, whitespace_pattern=None)
vocab = len(tokenizer)
rng = random.Random(0)
schema = {"type": "object", "properties": {"name": {"type": "string"},
          "n": {"type": "integer"}}, "required": ["name", "n"]}
compared = 0
for grammar in (backend.dispatch_regex(r"[a-z0-9_ ,.():=+\-*\n]+"),
                backend.dispatch_json(json.dumps(schema))):
    for _ in range(40):
        if grammar.guide.is_final_state(grammar.state):
            break
        for _ in range(2):  # a miss, then a hit
            ours = torch.zeros(3, vocab, dtype=torch.bool)
            theirs = torch.zeros(3, vocab, dtype=torch.bool)
            grammar.fill_vocab_mask(ours, 1)
            original(grammar, theirs, 1)
            assert torch.equal(ours, theirs)
            compared += 1
        allowed = (~ours[1]).nonzero().view(-1).tolist()
        assert allowed
        grammar.accept_token(rng.choice(allowed))
assert compared > 40 and outlines_masks.cached_rows() > 0
print("ok")
"""


def test_cached_rows_equal_sglangs_masks(tiny_model_path):
    run = subprocess.run([sys.executable, "-c", _CHECK, tiny_model_path], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


def test_installed_only_for_the_outlines_backend():
    def targets(cfg: IlsiConfig) -> set[str]:
        return {tp.target for tp in patches.touch_points(cfg)}

    assert patches.OUTLINES_FILL in targets(IlsiConfig(grammar_backend="outlines"))
    assert patches.OUTLINES_FILL not in targets(IlsiConfig(grammar_backend="xgrammar"))
    assert patches.OUTLINES_FILL not in targets(IlsiConfig())
    assert parse([], ["--model-path", "m", "--grammar-backend", "outlines"]).grammar_backend \
        == "outlines"
    assert parse([], ["--grammar-backend=llguidance"]).grammar_backend == "llguidance"
