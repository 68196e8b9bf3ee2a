"""The committed ``smollm2-json-orm`` head and the pure helpers of its recipe (fast: no model)."""

from __future__ import annotations

import json
import math

import pytest

from sglang_ilsi_lab.models import catalog, json_orm


def test_committed_head_has_the_right_shape_and_metrics():
    from safetensors.torch import load_file

    head = load_file(str(json_orm.HEAD_DIR / json_orm.HEAD_FILE))
    assert list(head) == [json_orm.HEAD_KEY]
    weight = head[json_orm.HEAD_KEY]
    assert tuple(weight.shape) == (1, 576)  # SmolLM2-135M's hidden size, no bias
    assert bool(weight.isfinite().all()) and float(weight.abs().sum()) > 0
    metrics = json.loads((json_orm.HEAD_DIR / json_orm.METRICS_FILE).read_text())
    assert metrics["name"] == "smollm2-json-orm" and metrics["kind"] == "outcome"
    assert metrics["policy"] == "smollm2-135m-instruct" and metrics["step_delimiter"] == "\n"
    held = metrics["heldout"]
    for key in ("accuracy", "label_rate", "best_of_2_accuracy", "first_sample_accuracy"):
        assert 0.0 <= held[key] <= 1.0
    # AUROC is undefined (NaN) when the held-out samples hold a single class.
    assert (math.isnan(held["auroc"]) and held["label_rate"] in (0.0, 1.0)) \
        or 0.0 <= held["auroc"] <= 1.0
    assert metrics["data"]["heldout_seed"] == 1 and metrics["data"]["train_problem_seed"] == 11
    entry = catalog.get("smollm2-json-orm")
    assert entry.kind == "derived" and entry.base == "smollm2-135m-instruct"
    # `sglang-ilsi models list` shows the held-out figures of the committed head.
    auroc = "undefined" if math.isnan(held["auroc"]) else f"{held['auroc']:.3f}"
    assert f"AUROC {auroc}" in entry.description
    assert f"accuracy {held['accuracy']:.3f}" in entry.description


def test_auroc_and_best_of_two():
    assert json_orm.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert json_orm.auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert math.isnan(json_orm.auroc([0.2, 0.3], [1, 1]))
    m = json_orm.evaluate([0.2, 0.9, 0.7, 0.1], [0, 1, 1, 0], samples=2)
    assert m["best_of_2_accuracy"] == 1.0 and m["first_sample_accuracy"] == 0.5
    assert m["oracle_accuracy"] == 1.0 and m["accuracy"] == 1.0 and m["label_rate"] == 0.5


def test_training_problems_are_disjoint_from_the_heldout_ones():
    held = {it["sentence"] for it in json_orm.heldout_problems()}
    train = json_orm.training_problems(100)
    assert train and not held & {it["sentence"] for it in train}
    with pytest.raises(ValueError):
        json_orm.training_problems(10, seed=1)


def test_right_up_to_case():
    item = {"answer": json.dumps({"name": "Ines", "age": 19, "city": "Rome", "job": "artist"})}
    assert json_orm.right_up_to_case('{"name": "Ines", "age": 19, "city": "Rome", '
                                     '"job": "Artist"}', item)
    assert not json_orm.right_up_to_case('{"name": "Ines", "age": 19, "city": "Rome"}', item)
    assert not json_orm.right_up_to_case('{"name": "Ines", "age": 19, "city": "Rome", '
                                         '"job": "artist in Rome"}', item)
    assert not json_orm.right_up_to_case('{"name": "Ines", "age": "19", "city": "Rome", '
                                         '"job": "artist"}', item)
    assert not json_orm.right_up_to_case("no json here", item)
