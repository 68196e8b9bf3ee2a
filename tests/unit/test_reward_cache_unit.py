"""The reward model's own KV cache (``sglang_ilsi/reward_cache.py``): the cache's
bookkeeping, and that a reward model reading through it scores exactly what a
full read scores (the lab's trained process and outcome models, no server)."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_ilsi import config as ilsi_config
from sglang_ilsi.errors import IlsiConfigError
from sglang_ilsi.reward import RewardModel, read_info
from sglang_ilsi.reward_cache import (
    CachedPrefix,
    PrefixCache,
    common_prefix_length,
    kv_bytes_per_token,
)
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import lab


def _entry(ids: tuple[int, ...]) -> CachedPrefix:
    return CachedPrefix(ids, [], [], torch.zeros(len(ids)))


def test_longest_prefix_and_moving_forward():
    cache = PrefixCache(capacity_tokens=100, bytes_per_token=10)
    cache.put(_entry((1, 2)))
    cache.put(_entry((1, 2, 3, 4)))
    cache.put(_entry((9,)))
    assert cache.longest([1, 2, 3, 4, 5]).ids == (1, 2, 3, 4)
    assert cache.longest([1, 2, 3]).ids == (1, 2)
    assert cache.longest([1, 2, 3, 4]).ids == (1, 2, 3, 4)  # an exact read
    assert cache.longest([2, 1]) is None
    assert (cache.lookups, cache.hits, cache.tokens_reused) == (4, 3, 10)
    # an entry that extends another replaces it: a request's cache moves with it
    old = cache.longest([1, 2, 3, 4, 5])
    cache.put(_entry((1, 2, 3, 4, 5, 6)), extends=old)
    assert cache.longest([1, 2, 3, 4, 5]).ids == (1, 2)
    assert cache.tokens_in_use == 2 + 1 + 6
    info = cache.describe()
    assert info["entries"] == 3 and info["bytes_in_use"] == 90 and info["capacity_bytes"] == 1000


def test_least_recently_used_are_evicted_to_fit():
    cache = PrefixCache(capacity_tokens=6, bytes_per_token=1)
    cache.put(_entry((1, 1, 1)))
    cache.put(_entry((2, 2, 2)))
    cache.longest([1, 1, 1, 5])  # (1, 1, 1) is now the more recent
    cache.put(_entry((3, 3)))
    assert cache.longest([2, 2, 2]) is None and cache.longest([1, 1, 1]) is not None
    assert cache.tokens_in_use == 5 and cache.evictions == 1
    cache.put(_entry(tuple(range(7))))  # longer than the whole cache: not kept
    assert cache.tokens_in_use == 5 and cache.longest(list(range(7))) is None


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2, 3]]) == 3
    assert common_prefix_length([[1], [2]]) == 0
    assert common_prefix_length([]) == 0


def test_kv_bytes_per_token_counts_grouped_heads():
    class Config:
        num_attention_heads, num_key_value_heads, head_dim = 9, 3, 64
        num_hidden_layers, hidden_size = 30, 576

    assert kv_bytes_per_token(Config(), 4) == 2 * 30 * 3 * 64 * 4


def test_launch_flag():
    assert ilsi_config.parse(["--ilsi"]).reward_cache_tokens == 16384
    assert ilsi_config.parse(["--ilsi", "--ilsi-reward-cache-tokens", "0"]
                             ).reward_cache_tokens == 0
    with pytest.raises(IlsiConfigError, match="--ilsi-reward-cache-tokens"):
        ilsi_config.parse(["--ilsi", "--ilsi-reward-cache-tokens", "-1"])


# -- a real reward model reading through its cache ----------------------------------------


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[RewardModel, RewardModel]]:
    """(cached, uncached) per lab reward model (the verifier reads its likelihood)."""
    out = {}
    for name in ("prm", "orm", "verifier"):
        info = read_info(name, str(lab.folder(f"lab-{name}")))
        out[name] = (RewardModel(info, cache_tokens=4096), RewardModel(info, cache_tokens=0))
    return out


@pytest.mark.parametrize("name", ["prm", "orm", "verifier"])
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 5), item_seed=st.integers(0, 50))
def test_reading_through_the_cache_scores_as_a_full_read(models, name, seed, k, item_seed):
    """RAD's reads (k candidate tokens on a text grown by one chosen candidate a
    step, its steps re-cut each time) score as full reads do, and after the
    first step the model computes only what changed."""
    from sglang_ilsi.reward import split_steps

    cached, full = models[name]
    rng = random.Random(seed)
    prompt = synthetic.arithmetic(1, seed=item_seed, difficulty=3)[0]["prompt"]
    text = ""
    for step in range(12):
        candidates = [cached.tokenizer.decode([rng.randrange(3, 200)]) for _ in range(k)]
        solutions = [split_steps(text + c, cached.info.step_delimiter) for c in candidates]
        got = cached.score([prompt] * k, solutions)
        want = full.score([prompt] * k, solutions)
        for g, w in zip(got, want, strict=True):
            assert g.scores == pytest.approx(w.scores, abs=1e-5)
            assert g.tokens == w.tokens and w.cached == 0
            if step > 0:  # the prompt and the text so far come from the cache
                assert g.cached >= g.tokens - 8 - cached.overlap
        text += rng.choice(candidates)


@pytest.mark.parametrize("name", ["prm", "verifier"])
def test_several_requests_in_one_batch_keep_their_own_prefixes(models, name):
    cached, full = models[name]
    items = synthetic.arithmetic(3, seed=7, difficulty=3)
    prompts = [it["prompt"] for it in items for _ in range(2)]
    jobs = [n for n in range(3) for _ in range(2)]
    for cut in (4, 9, 15):
        solutions = [[it["answer"][:cut] + extra] for it in items for extra in ("1", "2")]
        got = cached.score(prompts, solutions, jobs)
        want = full.score(prompts, solutions)
        assert [g.scores for g in got] == [pytest.approx(w.scores, abs=1e-5) for w in want]
        if cut > 4:
            assert all(g.cached > 0 for g in got)


def test_a_tiny_cache_evicts_and_still_scores_exactly(models):
    info = models["prm"][0].info
    tiny = RewardModel(info, cache_tokens=24)
    _, full = models["prm"]
    items = synthetic.arithmetic(4, seed=3, difficulty=3)
    for it in items * 2:
        solution = [[it["answer"]]]
        assert tiny.score([it["prompt"]], solution)[0].scores == pytest.approx(
            full.score([it["prompt"]], solution)[0].scores, abs=1e-5)
    assert tiny.cache is not None and tiny.cache.tokens_in_use <= 24


def test_reads_over_the_memory_budget_are_split_and_score_the_same(models, monkeypatch):
    """A batch whose keys and values would pass READ_BUDGET_BYTES is read in runs:
    the scores, and what the cache keeps, are those of one batch."""
    from sglang_ilsi import reward

    info = models["prm"][0].info
    _, full = models["prm"]
    items = synthetic.arithmetic(6, seed=5, difficulty=3)
    prompts = [it["prompt"] for it in items for _ in range(3)]
    jobs = [n for n in range(6) for _ in range(3)]
    budgeted = RewardModel(info, cache_tokens=4096)
    per_row = 40 * budgeted.cache.bytes_per_token  # about two rows a run
    monkeypatch.setattr(reward, "READ_BUDGET_BYTES", per_row)
    assert len(budgeted._chunks(list(range(10)), lambda k: 20)) == 5
    for cut in (6, 12):
        solutions = [[it["answer"][:cut] + extra] for it in items for extra in ("1", "2", "3")]
        got = budgeted.score(prompts, solutions, jobs)
        want = full.score(prompts, solutions)
        assert [g.scores for g in got] == [pytest.approx(w.scores, abs=1e-5) for w in want]
    assert all(g.cached > 0 for g in got)


def test_the_likelihood_verifier_scores_as_its_language_model(models):
    """lab-verifier's step scores equal lab-target's own probabilities in transformers:
    at each step's end, the lowest p(token | prefix) of any solution token so far."""
    from transformers import AutoModelForCausalLM

    from sglang_ilsi.reward import split_steps

    cached, full = models["verifier"]
    lm = AutoModelForCausalLM.from_pretrained(str(lab.folder("lab-target")),
                                              dtype=torch.float32).eval()
    items = synthetic.arithmetic(6, seed=4, difficulty=3)
    solutions = [split_steps(it["answer"].replace("=", "=1", 1), "\n") for it in items[:3]]
    solutions += [split_steps(it["answer"], "\n") for it in items[3:]]
    for reader in (full, cached, cached):  # the last read comes from the cache
        got = reader.score([it["prompt"] for it in items], solutions)
        for it, steps, scored in zip(items, solutions, got, strict=True):
            ids, ends = reader.encode(it["prompt"], steps)
            first = len(reader.encode(it["prompt"], [])[0])
            with torch.no_grad():
                probs = torch.softmax(lm(torch.tensor([ids])).logits[0].double(), -1)
            written = [float(probs[t - 1, ids[t]]) for t in range(first, len(ids))]
            want = [min(written[:end - first + 1]) for end in ends]
            assert list(scored.scores) == pytest.approx(want, abs=1e-5)
    assert all(g.cached > 0 for g in cached.score([it["prompt"] for it in items], solutions))
