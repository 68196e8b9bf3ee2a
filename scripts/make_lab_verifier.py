"""Write and measure ``lab-verifier``: lab-target read through its own likelihood as a
process reward model for lab-target-early's arithmetic solutions (no training).

The folder (``lab/sglang_ilsi_lab/models/lab_pair/verifier``) holds links to
lab-target's weights and tokenizer and a ``sglang_ilsi_reward.json`` declaring
``"reads": "likelihood"``: a step's score is the lowest probability lab-target gives to
any solution token written up to the step's end (``sglang_ilsi/reward.py``). The
held-out figures are measured here with the server's own :class:`RewardModel` on the
solutions lab-prm and lab-orm were measured on (``reward_models.eval_problems()``, 4
samples each, sampling seed 1011), and written into that JSON.

    python scripts/make_lab_verifier.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sglang_ilsi.reward import RewardModel, read_info, split_steps
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import lab
from sglang_ilsi_lab.models import reward_models as rm

NAME, BASE = "lab-verifier", "lab-target"
LINKED = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
          "tokenizer_config.json")
HELDOUT_SEED = 1011  # the held-out sampling of lab-prm / lab-orm


def write_folder(out: Path, metrics: dict | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = out / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(lab.folder(BASE) / name, out))
    declared = {"kind": "process", "reads": "likelihood", "step_delimiter": rm.DELIMITER,
                "policy": rm.POLICY, "name": NAME, "base": BASE,
                "how": "a step's score: the lowest p(token | prefix) under lab-target of any "
                       "solution token up to the step's end (no training)",
                "metrics": metrics or {}}
    (out / rm.REWARD_FILE).write_text(json.dumps(declared, indent=2) + "\n")


def main() -> int:
    start = time.perf_counter()
    out = lab.folder(NAME)
    write_folder(out, None)
    verifier = RewardModel(read_info(NAME, str(out)), cache_tokens=0)
    policy, tok = lab.load(rm.POLICY)
    items = rm.eval_problems()
    samples = rm.build_samples(tok, items, rm.sample_solutions(policy, tok, items, 4,
                                                               HELDOUT_SEED))
    scored = verifier.score([s.item["prompt"] for s in samples],
                            [split_steps(s.solution, rm.DELIMITER) for s in samples])
    scores = [list(x.scores) for x in scored]
    metrics = {"heldout": f"{len(samples)} solutions of {rm.POLICY} (temperature 1, 4 per "
                          f"problem) on synthetic.arithmetic({len(items)}, seed=1), "
                          f"{sum(s.correct for s in samples) / len(samples):.1%} right",
               **rm.process_metrics(samples, scores)}
    metrics["best_of_n"] = rm.best_of_n(samples, {
        "verifier_last": [ps[-1] if ps else 0.0 for ps in scores]})
    contrast_items = synthetic.arithmetic(40, seed=synthetic.EVAL_SEED)
    won: dict[str, float] = {}
    good = verifier.score([it["prompt"] for it in contrast_items],
                          [split_steps(it["answer"], rm.DELIMITER) for it in contrast_items])
    for delta in (1, 10):
        bad = verifier.score([it["prompt"] for it in contrast_items],
                             [split_steps(rm.wrong_first_step(it, delta), rm.DELIMITER)
                              for it in contrast_items])
        won[f"first_step_off_by_{delta}"] = round(sum(
            g.scores[0] > b.scores[0] for g, b in zip(good, bad)) / len(good), 4)
        won[f"last_step_off_by_{delta}"] = round(sum(
            g.scores[-1] > b.scores[-1] for g, b in zip(good, bad)) / len(good), 4)
    metrics["reference_beats_wrong_first_step"] = {**won, "items": len(contrast_items)}
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    write_folder(out, metrics)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
