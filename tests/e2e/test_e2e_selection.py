"""End-to-end: one call, N samples, one answer (the ``samples`` capability).

Each selection rule's choice equals a plain-Python reference applied to the
candidates the server returns; the prompt is prefilled once for N=16; OpenAI
clients get the chosen answer as an ordinary response; bad input is a 400;
concurrent selection requests never mix candidates.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import selection_references as ref

pytestmark = pytest.mark.server

PROMPT = "def hello(world):"


@pytest.fixture(scope="module")
def client(tiny_server):
    return tiny_server


def select(client, ilsi: dict, max_new_tokens: int = 3, temperature: float = 1.0, **kw) -> dict:
    out = client.generate(PROMPT, max_new_tokens=max_new_tokens, temperature=temperature,
                          ilsi=ilsi, **kw)
    report = out["meta_info"]["ilsi"]
    assert report["method"] == ilsi["method"]
    assert out["text"] == report["candidates"][report["chosen"]]["text"]
    assert out["output_ids"] == report["candidates"][report["chosen"]]["output_ids"]
    return report


def texts_and_logprobs(report):
    cands = report["candidates"]
    return [c["text"] for c in cands], [c["logprob"] for c in cands]


def test_self_consistency_equals_reference(client):
    report = select(client, {"method": "self_consistency", "n": 12, "extractor": "full_text"},
                    max_new_tokens=1)
    texts, lps = texts_and_logprobs(report)
    answers = [t.strip() or None for t in texts]
    assert report["chosen"] == ref.self_consistency(answers, lps)
    assert len(set(answers)) < len(answers)  # there was something to vote on
    assert report["cost"]["samples"] == 12


def test_esc_stops_early_like_reference(client):
    report = select(client, {"method": "esc", "n": 16, "window": 2, "extractor": "full_text"},
                    max_new_tokens=1, temperature=0.3)
    texts, lps = texts_and_logprobs(report)
    answers = [t.strip() or None for t in texts]
    position, used = ref.esc(answers, lps, 2)
    assert report["chosen"] == position
    assert report["cost"]["samples"] == used == len(texts)
    assert report["selection"]["info"]["samples_saved"] == 16 - used
    assert used < 16  # at T=0.3 the tiny model agrees with itself early


@pytest.mark.parametrize("utility", ["chrf", "bleu", "rouge_l", "exact_match", "embedding_cosine"])
def test_mbr_equals_reference(client, utility):
    report = select(client, {"method": "mbr", "n": 8, "utility": utility}, max_new_tokens=6)
    texts, _ = texts_and_logprobs(report)
    if utility == "embedding_cosine":
        u = ref.embedding_cosine_matrix(texts)
        best, scores = ref.mbr(texts, u)
        got = report["selection"]["scores"]
        assert got == pytest.approx(scores, abs=1e-4)
        assert report["chosen"] == best or scores[report["chosen"]] == pytest.approx(max(scores), abs=1e-6)
    else:
        u = ref.matrix(getattr(ref, utility), texts)
        assert report["chosen"] == ref.mbr(texts, u)[0]


def test_mbr_model_equals_reference(client):
    report = select(client, {"method": "mbr_model", "n": 8, "utility": "chrf"}, max_new_tokens=4)
    texts, lps = texts_and_logprobs(report)
    ids = [c["output_ids"] for c in report["candidates"]]
    assert report["chosen"] == ref.mbr_model(texts, lps, ids, ref.chrf)


def test_mbr_pruned_equals_reference(client):
    params = {"method": "mbr_pruned", "n": 16, "utility": "chrf", "alpha": 0.9,
              "bootstrap": 100, "schedule_start": 4, "seed": 3}
    report = select(client, params, max_new_tokens=5)
    texts, _ = texts_and_logprobs(report)
    position, evaluations = ref.mbr_pruned(texts, ref.matrix(ref.chrf, texts), 0.9, 100, 4, 3)
    assert report["chosen"] == position
    assert report["selection"]["info"]["utility_evaluations"] == evaluations


def test_mbr_diverse_returns_a_set(client):
    report = select(client, {"method": "mbr_diverse", "n": 8, "k": 3, "lambda": 0.5},
                    max_new_tokens=5)
    texts, _ = texts_and_logprobs(report)
    chosen_set = ref.mbr_diverse(texts, ref.matrix(ref.chrf, texts), 3, 0.5)
    assert report["chosen"] == chosen_set[0]
    assert json.dumps(chosen_set) in json.dumps(report["selection"]["info"])


def test_best_of_n_with_the_policy_as_verifier(client, tiny_model_path):
    """Rewards are P(yes)/(P(yes)+P(no)) read by SGLang's scoring path; they
    equal transformers' probabilities on the same token sequences."""
    import numpy as np
    from reference_decoding import HFReference

    # the tiny tokenizer splits " Yes"/" No" into " " + ...: use labels without the space
    report = select(client, {"method": "best_of_n", "n": 6, "yes": "Yes", "no": "No"},
                    max_new_tokens=4)
    hf = HFReference(tiny_model_path)
    tok = hf.tokenizer
    suffix = tok.encode("\nIs the answer above correct? Answer Yes or No.\nAnswer:",
                        add_special_tokens=False)
    yes, no = tok.encode("Yes", add_special_tokens=False)[0], tok.encode("No", add_special_tokens=False)[0]
    expected = []
    for cand in report["candidates"]:
        row = hf.logits(hf.encode(PROMPT) + cand["output_ids"] + suffix)
        pair = np.exp(row[[yes, no]] - row[[yes, no]].max())
        expected.append(pair[0] / pair.sum())
    got = [c["reward"] for c in report["candidates"]]
    assert got == pytest.approx(expected, abs=1e-3)
    assert report["chosen"] == ref.best_of_n(got)
    assert report["cost"]["reward_ms"] > 0


def test_prompt_is_prefilled_once_for_16_samples(client):
    long_prompt = PROMPT + " # " + "spam " * 60
    out = client.generate(long_prompt, max_new_tokens=2, temperature=1.0,
                          ilsi={"method": "mbr", "n": 16})
    report = out["meta_info"]["ilsi"]
    prompt_tokens = out["meta_info"]["prompt_tokens"]
    assert prompt_tokens > 60
    # SGLang prefills the prompt once (a prefix-warming copy); each of the 16
    # continuations finds it in the radix cache and recomputes at most a token.
    assert report["cost"]["samples"] == 16
    assert report["cost"]["prefill_tokens_computed"] <= 16
    assert report["cost"]["generate_calls"] == 1


def test_candidates_use_a_logits_method(client):
    report = select(client, {"method": "mbr", "n": 4,
                             "candidates": {"method": "typical", "mass": 0.5}})
    assert report["candidates_method"]["method"] == "typical"
    assert report["candidates_method"]["params"]["mass"] == 0.5


def test_openai_clients_get_the_chosen_answer(client):
    oa = client.openai()
    resp = oa.chat.completions.create(
        model=client.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
        temperature=1.0, extra_body={"custom_params": {"ilsi": {"method": "mbr", "n": 6}}})
    report = resp.model_extra["ilsi"]
    assert len(resp.choices) == 1
    assert resp.choices[0].message.content == report["candidates"][report["chosen"]]["text"]
    suffixed = oa.completions.create(model=client.model + "+self_consistency", prompt=PROMPT,
                                     max_tokens=2, temperature=1.0)
    assert suffixed.model_extra["ilsi"]["source"] == "model_suffix"
    assert suffixed.model_extra["ilsi"]["cost"]["samples"] == 8
    chunks = list(oa.chat.completions.create(
        model=client.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
        temperature=1.0, stream=True,
        extra_body={"custom_params": {"ilsi": {"method": "mbr", "n": 3}}}))
    reports = [c.model_extra["ilsi"] for c in chunks if c.model_extra and "ilsi" in c.model_extra]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(reports) == 1 and reports[0]["method"] == "mbr"
    assert text == reports[0]["candidates"][reports[0]["chosen"]]["text"]


def test_streaming_gets_the_selected_answer(client):
    import requests

    body = {"text": PROMPT, "stream": True, "sampling_params": {
        "max_new_tokens": 3, "temperature": 1.0,
        "custom_params": {"ilsi": {"method": "mbr", "n": 4}}}}
    chunks = []
    with requests.post(client.base_url + "/generate", json=body, stream=True, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                chunks.append(json.loads(line[6:]))
    report = chunks[-1]["meta_info"]["ilsi"]
    assert chunks[-1]["text"] == report["candidates"][report["chosen"]]["text"]


@pytest.mark.parametrize("ilsi,needle", [
    ({"method": "mbr", "n": 0}, "ilsi.n"),
    ({"method": "mbr", "n": 1000}, "ilsi.n"),
    ({"method": "mbr", "utility": "nope"}, "ilsi.utility"),
    ({"method": "self_consistency", "extractor": "nope"}, "ilsi.extractor"),
    ({"method": "self_consistency", "extractor": "regex", "pattern": "("}, "ilsi.pattern"),
    ({"method": "best_of_n", "reward": "oracle"}, "ilsi.reward"),
    ({"method": "best_of_n", "yes": ""}, "ilsi.yes"),
    ({"method": "mbr", "candidates": {"method": "mbr"}}, "selection method"),
])
def test_bad_selection_input_is_400(client, ilsi, needle):
    r = client.post("/generate", {"text": "x", "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"ilsi": ilsi}}})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]
    assert client.generate("x", max_new_tokens=2)["output_ids"]


def test_openai_n_conflicts_with_selection(client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.openai().completions.create(
            model=client.model, prompt="x", max_tokens=2, n=2,
            extra_body={"custom_params": {"ilsi": {"method": "mbr", "n": 4}}})
    assert "ilsi.n" in str(e.value)


def test_concurrent_selections_never_mix_candidates(client):
    def job(i: int) -> tuple[int, dict]:
        out = client.generate(f"{PROMPT} {i}", max_new_tokens=2 + i % 4, temperature=1.0,
                              ignore_eos=True, ilsi={"method": "mbr", "n": 5})
        return i, out["meta_info"]["ilsi"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(job, range(8)))
    for i, report in results:
        assert len(report["candidates"]) == 5
        assert {c["completion_tokens"] for c in report["candidates"]} == {2 + i % 4}


def test_frontend_primitives(client):
    """sglang_ilsi.lang inside an @sgl.function program on this server."""
    import sglang as sgl

    from sglang_ilsi import lang

    @sgl.function
    def program(s):
        s += PROMPT
        lang.self_consistency(s, "sc", n=6, max_tokens=1, temperature=1.0, extractor="full_text")
        lang.mbr_gen(s, "mbr", n=4, max_tokens=3, temperature=1.0)
        lang.best_of_n(s, "bon", n=3, max_tokens=2, temperature=1.0, yes="Yes", no="No")
        lang.ilsi_gen(s, "typ", "typical", mass=0.5, max_tokens=3)
        lang.ilsi_gen(s, "srv", "mbr", n=4, max_tokens=3, temperature=1.0)

    backend = sgl.RuntimeEndpoint(client.base_url)
    state = program.run(backend=backend)
    sc = state["sc_ilsi"]
    answers = [t.strip() or None for t in sc["candidates"]]
    assert state["sc"] == sc["candidates"][ref.self_consistency(answers, None)]
    mbr = state["mbr_ilsi"]
    assert state["mbr"] == mbr["candidates"][ref.mbr(mbr["candidates"],
                                                     ref.matrix(ref.chrf, mbr["candidates"]))[0]]
    bon = state["bon_ilsi"]
    assert state["bon"] in bon["candidates"]
    assert bon["selection"]["scores"] and all(0 <= x <= 1 for x in bon["selection"]["scores"])
    assert state["typ_ilsi"]["method"] == "typical"
    assert state["srv_ilsi"]["cost"]["samples"] == 4
    assert state.text().startswith(PROMPT + state["sc"] + state["mbr"] + state["bon"])
