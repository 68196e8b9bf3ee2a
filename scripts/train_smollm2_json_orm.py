#!/usr/bin/env python
"""Reproduce the ``smollm2-json-orm`` head (:mod:`sglang_ilsi_lab.models.json_orm`).

    nice -n 15 .venv/bin/python scripts/train_smollm2_json_orm.py

Samples solutions of the converted SmolLM2-135M-Instruct to training (seed 11)
and held-out (seed 1) JSON extraction problems (in transformers by default, as the
committed head was; ``--sampler server`` starts an SGLang server on the folder and
posts to ``/generate`` instead), computes the frozen body's last-token features in
transformers, fits the no-intercept logistic head and writes ``score.safetensors``
and ``metrics.json`` (default: the committed folder
``lab/sglang_ilsi_lab/models/smollm2_json_orm``). About 5 minutes on 2 CPU
threads; ``--samples-file`` keeps the samples for a rerun of the fit. Then ``sglang-ilsi models prepare smollm2-json-orm`` builds the
served folder (delete the cached one first if it exists).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sglang_ilsi_lab.models import json_orm


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=json_orm.HEAD_DIR,
                   help="folder for score.safetensors and metrics.json (default: %(default)s)")
    p.add_argument("--train-problems", type=int, default=json_orm.TRAIN_PROBLEMS)
    p.add_argument("--heldout-problems", type=int, default=json_orm.HELDOUT_PROBLEMS)
    p.add_argument("--samples", type=int, default=json_orm.SAMPLES,
                   help="solutions per problem (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=json_orm.TEMPERATURE)
    p.add_argument("--sampler", choices=("server", "transformers"), default="transformers",
                   help="where solutions are sampled (default: %(default)s; see json_orm)")
    p.add_argument("--base-url", default=None,
                   help="a running server on smollm2-135m-instruct (default: start one)")
    p.add_argument("--samples-file", type=Path, default=None,
                   help="JSON file of sampled solutions: reused if present, else written")
    ns = p.parse_args()
    from sglang_ilsi_lab.models import catalog

    metrics = json_orm.train(catalog.prepare(json_orm.POLICY), ns.out,
                             train_problems=ns.train_problems,
                             heldout=ns.heldout_problems, samples=ns.samples,
                             temperature=ns.temperature, base_url=ns.base_url,
                             samples_file=ns.samples_file, sampler=ns.sampler)
    print(json.dumps(metrics["heldout"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
