"""The lab reward models (``lab/sglang_ilsi_lab/models/reward_models.py``): the scoring
convention on hand-made solutions, and the committed ``lab_pair/prm`` and ``lab_pair/orm``
folders (format, and a real check of what the trained models score). No training."""

from __future__ import annotations

import json

import pytest

from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import catalog, lab
from sglang_ilsi_lab.models import reward_models as rm

ITEM = synthetic.arithmetic_item([23, 45, 12], ["+", "-"])  # " 23+45=68\n68-12=56\n#### 56"


# -- the convention (no model) ---------------------------------------------------

def test_split_steps_keeps_delimiters():
    assert ITEM["answer"] == " 23+45=68\n68-12=56\n#### 56"
    assert rm.split_steps(ITEM["answer"]) == [" 23+45=68\n", "68-12=56\n", "#### 56"]
    assert rm.split_steps(" 23+45=68\n68-12=56\n") == [" 23+45=68\n", "68-12=56\n"]
    assert rm.split_steps("#### 56") == ["#### 56"]
    assert rm.split_steps("a\n\nb") == ["a\n", "\n", "b"]
    assert rm.split_steps("") == []
    for text in (ITEM["answer"], "x\ny\n", "\n", "abc"):
        assert "".join(rm.split_steps(text)) == text


@pytest.mark.parametrize("solution, steps, correct", [
    (" 23+45=68\n68-12=56\n#### 56", [1, 1, 1], 1),  # the reference
    (" 23+45=69\n69-12=57\n#### 57", [0, 0, 0], 0),  # wrong first step
    (" 23+45=68\n68-12=55\n#### 55", [1, 0, 0], 0),  # wrong middle step, carried on
    (" 23+45=68\n68-12=55\n#### 56", [1, 0, 0], 1),  # wrong step, right final answer
    (" 23+45=68\n68-12=56\n#### 57", [1, 1, 0], 0),  # wrong final line
    (" 23+45=68\n68-12=56\n", [1, 1], 0),  # stopped before the answer line
    (" 23+45=68\n68-12=56\n#### 56\n", [1, 1, 0], 1),  # the last step has an extra "\n"
    (" 23+45=68\n68-12=56\n#### 56\n#### 56", [1, 1, 0, 0], 1),  # steps past the reference
    (" 23+45=68\n#### 68", [1, 0], 0),  # skipped a step
    ("", [], 0),
])
def test_labels(solution, steps, correct):
    assert rm.step_labels(solution, ITEM) == steps
    assert rm.outcome_label(solution, ITEM) == correct


def test_a_wrong_step_stays_wrong_even_if_later_steps_match():
    # the second step equals the reference's, but the prefix is off track already
    assert rm.step_labels(" 23+45=67\n68-12=56\n#### 56", ITEM) == [0, 0, 0]


@pytest.fixture(scope="module")
def tok():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(lab.folder(rm.POLICY))


def test_encode_concatenates_pieces_tokenised_alone(tok):
    steps = rm.split_steps(ITEM["answer"])
    ids, ends = rm.encode(tok, ITEM["prompt"], steps)
    pieces = [tok(t, add_special_tokens=False)["input_ids"] for t in [ITEM["prompt"], *steps]]
    assert ids == [i for piece in pieces for i in piece]
    assert ends == [len(pieces[0]) + sum(map(len, pieces[1:k + 1])) - 1
                    for k in range(1, len(steps) + 1)]
    assert ends[-1] == len(ids) - 1
    assert [ids[e] for e in ends[:-1]] == [199, 199]  # "\n" ends the first two steps
    assert tok.eos_token_id not in ids  # no BOS, no EOS


def test_auroc_is_the_rank_statistic():
    assert rm.auroc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert rm.auroc([0.1, 0.3, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert rm.auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    assert rm.auroc([0.2, 0.6, 0.6, 0.9], [0, 1, 0, 1]) == pytest.approx(0.875)
    assert rm.auroc([0.1, 0.2], [1, 1]) is None


# -- the committed folders -------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {kind: rm.load(kind) for kind in ("process", "outcome")}
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind, sub, name, arch", [
    ("process", "prm", "lab-prm", "LlamaForTokenClassification"),
    ("outcome", "orm", "lab-orm", "LlamaForSequenceClassification"),
])
def test_folder_format(kind, sub, name, arch):
    folder = lab.LAB_DIR / sub
    assert lab.folder(name) == folder
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [arch]
    assert len(config["id2label"]) == 1  # num_labels=1
    assert config["pad_token_id"] == 0 and config["dtype"] == "float32"
    declared = json.loads((folder / rm.REWARD_FILE).read_text())
    assert declared["kind"] == kind and declared["name"] == name
    assert declared["step_delimiter"] == "\n" and declared["policy"] == "lab-target-early"
    assert isinstance(declared["seed"], int) and declared["metrics"]
    # the policy's tokenizer, byte for byte
    policy = lab.folder("lab-target-early")
    for file in ("tokenizer.json", "tokenizer_config.json"):
        assert (folder / file).read_bytes() == (policy / file).read_bytes()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert 3e6 < size < 5e6  # float32, ~1.07 M parameters
    entry = catalog.get(name)
    assert entry.kind == "committed" and entry.is_prepared() and entry.path() == folder
    assert entry.info()["reward"]["kind"] == kind


def test_folders_load_with_the_right_classes(models):
    transformers = pytest.importorskip("transformers")
    prm, _, prm_info = models["process"]
    orm, _, orm_info = models["outcome"]
    assert isinstance(prm, transformers.LlamaForTokenClassification)
    assert isinstance(orm, transformers.LlamaForSequenceClassification)
    assert prm.config.num_labels == orm.config.num_labels == 1
    assert orm.config.pad_token_id == 0
    assert (prm_info["kind"], orm_info["kind"]) == ("process", "outcome")
    for model in (prm, orm):
        assert next(model.parameters()).dtype.is_floating_point
        assert model.score.out_features == 1


def test_convention_matches_the_hf_heads(models):
    """score(model.model(ids)) read at the convention's positions is what the HF
    classification heads compute (token logits; the sequence head pools the last token)."""
    torch = pytest.importorskip("torch")
    for kind in ("process", "outcome"):
        model, tok, _ = models[kind]
        ids, ends = rm.encode(tok, ITEM["prompt"], rm.split_steps(ITEM["answer"]))
        x = torch.tensor([ids])
        with torch.no_grad():
            ours = rm.logits(model, x)[0]
            hf = model(input_ids=x).logits[0]
        scores = rm.score_solution(model, tok, ITEM["prompt"], ITEM["answer"], kind)
        if kind == "process":
            assert torch.allclose(ours, hf[:, 0], atol=1e-5)
            assert scores == pytest.approx(torch.sigmoid(ours[ends]).tolist(), abs=1e-6)
        else:
            assert torch.allclose(ours[-1], hf[0], atol=1e-5)
            assert scores == pytest.approx([float(torch.sigmoid(ours[-1]))], abs=1e-6)


def test_wrong_first_step():
    assert rm.wrong_first_step(ITEM) == " 23+45=69\n69-12=57\n#### 57"
    assert rm.wrong_first_step(ITEM, 10) == " 23+45=78\n78-12=66\n#### 66"
    assert rm.step_labels(rm.wrong_first_step(ITEM), ITEM) == [0, 0, 0]
    for item in synthetic.arithmetic(20, seed=synthetic.EVAL_SEED):
        wrong = rm.wrong_first_step(item)
        assert len(rm.split_steps(wrong)) == len(rm.split_steps(item["answer"]))
        assert rm.outcome_label(wrong, item) == 0 and not any(rm.step_labels(wrong, item))


def test_trained_models_rank_sampled_solutions(models):
    """The committed models on the policy's own samples of the first 64 evaluation
    problems (the first batch of the held-out sampling, same seed): well above chance,
    as reported in ``reward-metrics.json`` (PRM step AUROC 0.79, ORM AUROC 0.65 there)."""
    policy, tok = lab.load(rm.POLICY)
    items = rm.eval_problems()[:64]
    samples = rm.build_samples(tok, items, rm.sample_solutions(policy, tok, items, 4, 1011))
    correct = [s.correct for s in samples]
    assert 0.3 < sum(correct) / len(correct) < 0.6
    prm = rm.predict(models["process"][0], samples, "process")
    orm = rm.predict(models["outcome"][0], samples, "outcome")
    assert rm.auroc([p for ps in prm for p in ps], [y for s in samples for y in s.steps]) > 0.7
    assert rm.auroc([ps[-1] for ps in prm], correct) > 0.6
    assert rm.auroc([ps[0] for ps in orm], correct) > 0.58


# Known limitation (see lab_pair/README.md): the committed models rate how hard a problem
# is for the policy rather than checking the arithmetic, so they do not tell a reference
# solution from the same solution with a slip. strict: a retrained model that does verify
# makes these pass, and then they should lose the mark.
NOT_A_VERIFIER = pytest.mark.xfail(strict=True, reason="lab-prm/lab-orm do not verify the "
                                   "arithmetic (reward-metrics.json: "
                                   "reference_beats_wrong_first_step ~ chance)")


@NOT_A_VERIFIER
def test_trained_prm_prefers_the_reference_to_a_wrong_first_step(models):
    """On evaluation problems, the PRM's first-step and last-step scores of the reference
    solution beat those of the same solution with its first result off by one."""
    prm, tok, _ = models["process"]
    won = rm.contrast(prm, tok, "process", synthetic.arithmetic(12, seed=synthetic.EVAL_SEED),
                      deltas=(1,))
    assert won["first_step_off_by_1"] >= 0.8 and won["last_step_off_by_1"] >= 0.8, won


@NOT_A_VERIFIER
def test_trained_orm_prefers_the_reference_to_a_wrong_answer(models):
    orm, tok, _ = models["outcome"]
    won = rm.contrast(orm, tok, "outcome", synthetic.arithmetic(12, seed=synthetic.EVAL_SEED),
                      deltas=(1,))
    assert won["off_by_1"] >= 0.75, won


def test_the_likelihood_verifier_verifies_the_arithmetic():
    """lab-verifier (lab-target read through its likelihood, ``scripts/make_lab_verifier.py``)
    does what lab-prm does not: on evaluation problems, the reference solution's first
    and last step scores beat those of the same solution with its first result off by
    one or by ten."""
    from sglang_ilsi.reward import RewardModel, read_info, split_steps

    verifier = RewardModel(read_info("lab-verifier", str(lab.folder("lab-verifier"))),
                           cache_tokens=0)
    assert verifier.info.reads == "likelihood" and verifier.info.kind == "process"
    items = synthetic.arithmetic(40, seed=synthetic.EVAL_SEED)
    good = verifier.score([it["prompt"] for it in items],
                          [split_steps(it["answer"], "\n") for it in items])
    for delta in (1, 10):
        bad = verifier.score([it["prompt"] for it in items],
                             [split_steps(rm.wrong_first_step(it, delta), "\n") for it in items])
        for step in (0, -1):
            won = sum(g.scores[step] > b.scores[step] for g, b in zip(good, bad)) / len(items)
            assert won >= 0.95, (delta, step, won)
    declared = json.loads((lab.folder("lab-verifier") / rm.REWARD_FILE).read_text())
    assert declared["reads"] == "likelihood" and declared["metrics"]["step_auroc"] > 0.95
    for name in ("model.safetensors", "tokenizer.json"):  # lab-target's own files
        assert (lab.folder("lab-verifier") / name).resolve() == \
            (lab.folder("lab-target") / name).resolve()
