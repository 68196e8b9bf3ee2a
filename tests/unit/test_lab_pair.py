"""The committed lab pair (``lab/sglang_ilsi_lab/models/lab_pair``): fast checks, no training.

Bounds come from the measurements in ``lab_pair/metrics.json`` (200 held-out
arithmetic items there, the first 30 of the same set here), with margins for
the smaller sample.
"""

from __future__ import annotations

import json

import pytest

from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import catalog, lab

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NAMES = ["target", "target-early", "draft"]
METRICS = json.loads((lab.LAB_DIR / "metrics.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    return {name: lab.load(name) for name in NAMES}


@pytest.fixture(scope="module")
def tok(models):
    return models["target"][1]


@pytest.fixture(scope="module")
def arith30():
    return synthetic.arithmetic(30, seed=synthetic.EVAL_SEED)


def test_folders_are_small_float32_llama_with_one_tokenizer():
    total = 0
    tokenizer_files = set()
    for name in NAMES:
        folder = lab.LAB_DIR / name
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"]
        assert config["dtype"] == "float32" and config["tie_word_embeddings"] is True
        assert config["vocab_size"] == 512 and config["eos_token_id"] == 0
        assert (folder / "model.safetensors").is_file()
        assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_files.add((folder / "tokenizer.json").read_text())
        total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert len(tokenizer_files) == 1  # the pair shares its tokenizer
    assert total <= 10e6


def test_load_in_transformers(models):
    from transformers import AutoConfig, LlamaForCausalLM

    sizes = {}
    for name, (model, _) in models.items():
        assert isinstance(model, LlamaForCausalLM)
        assert AutoConfig.from_pretrained(lab.LAB_DIR / name).model_type == "llama"
        assert model.dtype == torch.float32
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        sizes[name] = sum(p.numel() for p in model.parameters())
        assert sizes[name] == METRICS["models"][name]["parameters"]
    assert sizes["target"] == sizes["target-early"] > 3 * sizes["draft"]
    # target-early is a different checkpoint, not a copy
    a, b = models["target"][0], models["target-early"][0]
    assert not torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)


def test_tokenizer_digits_one_per_token(tok):
    ids = tok("9876543210", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == list("9876543210")
    for item in synthetic.arithmetic(20, seed=3) + synthetic.json_extraction(20, seed=3):
        text = item["prompt"] + item["answer"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # round trip
        pieces = [tok.decode([i]) for i in ids]
        assert all(not any(c.isdigit() for c in p) or p.strip().isdigit() and len(p.strip()) == 1
                   for p in pieces), pieces
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    assert tok("Q: 1+2=?\nA:")["input_ids"] == tok("Q: 1+2=?\nA:", add_special_tokens=False)[
        "input_ids"]  # no BOS is added


def test_target_accuracy(models, tok, arith30):
    # measured: 30/30 here, 0.975 on the 200 items of metrics.json
    acc, texts = lab.accuracy(models["target"][0], tok, arith30)
    assert acc >= 0.9, texts
    json_items = synthetic.json_extraction(10, seed=synthetic.EVAL_SEED)
    assert lab.accuracy(models["target"][0], tok, json_items)[0] >= 0.8  # measured 9/10


def test_target_early_leaves_room(models, tok, arith30):
    # measured: 20/30 here, 0.60 on the 200 items of metrics.json
    acc, _ = lab.accuracy(models["target-early"][0], tok, arith30)
    assert 0.5 <= acc <= 0.8
    assert acc < lab.accuracy(models["target"][0], tok, arith30)[0]


def test_draft_agrees_with_target(models, tok, arith30):
    prompts = [it["prompt"] for it in arith30[:20]] + [
        it["prompt"] for it in synthetic.json_extraction(10, seed=synthetic.EVAL_SEED)]
    agreement = lab.token_agreement(models["draft"][0], models["target"][0], tok, prompts)
    measured = METRICS["eval"]["draft_token_agreement"]["with_target"]  # 0.941 (0.945 here)
    assert agreement >= measured - 0.05


def test_metrics_file_matches_the_brief():
    acc = METRICS["eval"]["greedy_accuracy"]
    assert METRICS["eval"]["sizes"]["arithmetic"] == 200 and METRICS["eval"]["sizes"]["json"] == 100
    assert acc["target"]["arithmetic"] >= 0.8
    assert 0.5 <= acc["target-early"]["arithmetic"] <= 0.8
    assert METRICS["total_mb"] <= 10
    for run in ("target", "draft"):
        assert {"steps", "tokens", "supervised_tokens", "seconds", "final_loss"} <= set(
            METRICS["training"][run])
    assert METRICS["seed"] == 0 and "train_lab_pair.py" in METRICS["command"]


def test_catalog_entries():
    for name in NAMES:
        entry = catalog.get(f"lab-{name}")
        assert entry.prepare() == lab.LAB_DIR / name
