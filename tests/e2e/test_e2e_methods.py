"""End-to-end: a real SGLang server on CPU with the plugin enabled (``--ilsi``).

Every method is reached through ``/generate`` and the OpenAI endpoints; its
greedy tokens equal a plain transformers loop with the reference transform;
its traced distributions equal the reference applied to the same logits; a
request's tokens do not change inside a busy mixed batch; bad input is a 400
naming the parameter and the server keeps serving.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from reference_decoding import make_transform

from sglang_ilsi import registry
from sglang_ilsi.params import validate_params

pytestmark = pytest.mark.server

PROMPTS = ["def hello(world):", "import os\nclass Foo:", "The quick brown fox"]

# (method, request params): chosen so each method has an effect on the tiny model.
CASES = [
    ("typical", {"mass": 0.5}),
    ("epsilon", {"epsilon": 0.02}),
    ("eta", {"epsilon": 0.01}),
    ("mirostat", {"tau": 2.0, "eta": 0.2}),
    ("top_n_sigma", {"n": 1.0}),
    ("adaptive", {"epsilon": 0.001}),
    ("penalty_decoding", {"penalty": 3.0, "window": 8}),
    ("look_back", {"alpha": 3.0, "top_k": 4}),
    ("keyword_boost", {"keywords": ["self", "return"], "strength": 4.0}),
    ("keyword_decay", {"keywords": ["self", "return"], "strength": 6.0, "decay": 0.8}),
    ("lexical_constraints", {"include": ["import", "return"], "exclude": ["self"],
                             "force_after": 4}),
    ("length_target", {"target": 6, "strength": 8.0, "tolerance": 2}),
    # PROMPTS[1] ends with ":": the first tokens must spell a name of the json module
    ("monitor", {"argument": "json", "trigger": ":"}),
]
# Methods whose greedy output must differ from plain greedy on some prompt
# (the others only truncate, which never moves the argmax).
ARGMAX_CHANGING = {"penalty_decoding", "look_back", "keyword_boost", "keyword_decay",
                   "lexical_constraints", "monitor"}


def decoding_steps(out: dict) -> int:
    """Decoding steps the method ran: one per returned token (EOS included)."""
    return len(out["output_ids"])


def full_params(method: str, given: dict) -> dict:
    return validate_params(registry.get(method).params, given)


@pytest.fixture(scope="module")
def client(tiny_server):
    return tiny_server


def test_every_registered_method_is_covered():
    """Each logits method is in CASES, or has its own end-to-end test file
    ``test_method_NAME.py`` beside this one (a new method is one file plus its
    test); methods needing extra distributions: test_e2e_multi_distribution.py."""
    extra = {"aux_model", "second_context", "layer_logits"}
    own_file = {m for m in registry.logits_methods()
                if (Path(__file__).parent / f"test_method_{m}.py").is_file()}
    assert {m for m, _ in CASES} | own_file == {m for m in registry.logits_methods()
                                                if not registry.get(m).needs & extra}
    assert not own_file & {m for m, _ in CASES}


def test_plain_greedy_matches_transformers(client, hf):
    for prompt in PROMPTS:
        out = client.generate(prompt, max_new_tokens=16)
        assert out["output_ids"] == hf.greedy(hf.encode(prompt), 16, None)
        assert "ilsi" not in out["meta_info"]


@pytest.mark.parametrize("method,params", CASES, ids=[c[0] for c in CASES])
def test_greedy_tokens_equal_reference(client, hf, method, params):
    full = full_params(method, params)
    differs = False
    for prompt in PROMPTS:
        out = client.generate(prompt, max_new_tokens=20, ilsi={"method": method, **params})
        transform = make_transform(method, full, hf.eos_ids, 0.0, hf.tokenizer)
        expected = hf.greedy(hf.encode(prompt), 20, transform)
        assert out["output_ids"] == expected, (method, prompt)
        report = out["meta_info"]["ilsi"]
        assert report["method"] == method
        assert report["source"] == "request"
        assert report["cost"]["steps"] == decoding_steps(out)
        assert report["cost"]["extra_forward_tokens"] == 0
        differs |= expected != hf.greedy(hf.encode(prompt), 20, None)
    if method in ARGMAX_CHANGING:
        assert differs, f"{method} never changed the greedy output: is it applied?"


def _logprobs(row: np.ndarray, temperature: float) -> np.ndarray:
    x = row / temperature
    finite = np.isfinite(x)
    out = np.full_like(x, -np.inf)
    m = x[finite].max()
    out[finite] = x[finite] - m - np.log(np.exp(x[finite] - m).sum())
    return out


@pytest.mark.parametrize("method,params", CASES, ids=[c[0] for c in CASES])
def test_traced_distribution_equals_reference(client, hf, method, params):
    """With sampling on (T=0.8), each step's traced distribution after the
    method equals the reference transform applied to transformers' logits
    for the same prefix."""
    temperature, k = 0.8, 6
    prompt_ids = hf.encode(PROMPTS[0])
    out = client.generate(PROMPTS[0], max_new_tokens=8, temperature=temperature,
                          ilsi={"method": method, "trace": k, **params})
    trace = out["meta_info"]["ilsi_trace"]
    tokens = out["output_ids"]
    assert len(trace) == len(tokens)
    transform = make_transform(method, full_params(method, params), hf.eos_ids,
                               temperature, hf.tokenizer)
    for step, entry in enumerate(trace):
        raw = hf.logits(prompt_ids + tokens[:step])
        before = _logprobs(raw, temperature)
        after = _logprobs(transform(raw, prompt_ids, tokens[:step]), temperature)
        for token, lp in entry["before"]:
            assert lp == pytest.approx(before[token], abs=2e-3), (method, step, "before")
        for token, lp in entry["after"]:
            assert lp == pytest.approx(after[token], abs=2e-3), (method, step, "after")
        expected_ids = [int(i) for i in np.argsort(-after)[:k] if np.isfinite(after[i])]
        assert len(entry["after"]) == len(expected_ids), (method, step)
        assert tokens[step] in {t for t, _ in entry["after"]} or np.isfinite(after[tokens[step]])


def test_batch_isolation_mixed_methods(client):
    """A greedy request's tokens are the same alone and among 20 concurrent
    requests with other methods, temperatures and lengths."""
    targets = [
        ("def hello(world):", {"method": "penalty_decoding", "penalty": 3.0, "window": 8}),
        ("import os\nclass Foo:", {"method": "look_back", "alpha": 3.0, "top_k": 4}),
        ("The quick brown fox", None),
    ]
    alone = [client.generate(p, max_new_tokens=16, ilsi=i)["output_ids"] for p, i in targets]
    others = []
    for n, (method, params) in enumerate(CASES * 2):
        others.append((PROMPTS[n % 3] + " x" * n, {"method": method, **params},
                       0.0 if n % 2 else 1.0, 4 + 3 * (n % 5)))

    def run(job):
        prompt, ilsi, temperature, length = job
        return client.generate(prompt, max_new_tokens=length, temperature=temperature, ilsi=ilsi)

    jobs = [(p, i, 0.0, 16) for p, i in targets] + others
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    assert len(jobs) >= 16
    for (prompt, _), want, got in zip(targets, alone, results):
        assert got["output_ids"] == want, prompt
    for job, res in zip(jobs[len(targets):], results[len(targets):]):
        assert res["meta_info"]["ilsi"]["method"] == job[1]["method"]
        assert res["meta_info"]["ilsi"]["cost"]["steps"] == decoding_steps(res)


@pytest.mark.parametrize("method,params", CASES, ids=[c[0] for c in CASES])
def test_openai_chat_reaches_every_method(client, method, params):
    oa = client.openai()
    resp = oa.chat.completions.create(
        model=client.model, messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=6, temperature=0, extra_body={"custom_params": {"ilsi": {"method": method, **params}}},
    )
    report = resp.model_extra["ilsi"]
    assert report["method"] == method
    assert report["params"] == {**full_params(method, params), **report["params"]}
    assert report["cost"]["steps"] == resp.usage.completion_tokens
    assert resp.choices[0].model_extra["ilsi"]["method"] == method


def test_model_suffix_selects_method(client):
    """``model="NAME+method"``: an unchanged OpenAI client gets the method."""
    oa = client.openai()
    prompt = "def hello(world):"
    plain = oa.completions.create(model=client.model, prompt=prompt, max_tokens=12, temperature=0)
    suffixed = oa.completions.create(model=client.model + "+penalty_decoding", prompt=prompt,
                                     max_tokens=12, temperature=0)
    direct = client.generate(prompt, max_new_tokens=12, ilsi={"method": "penalty_decoding"})
    report = suffixed.model_extra["ilsi"]
    assert report["method"] == "penalty_decoding"
    assert report["source"] == "model_suffix"
    assert suffixed.choices[0].text == direct["text"]
    assert "ilsi" not in (plain.model_extra or {})
    chat = oa.chat.completions.create(model=client.model + "+typical",
                                      messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert chat.model_extra["ilsi"]["method"] == "typical"


def _dill_processor() -> str:
    import dill

    class Evil:  # defined locally: dill ships it by value, as code
        def __call__(self, logits, params=None):
            return logits

    return json.dumps({"callable": dill.dumps(Evil).hex()})


BAD_GENERATE = [
    ({"ilsi": {"method": "nope"}}, "ilsi.method"),
    ({"ilsi": {"method": "typical", "mass": "high"}}, "ilsi.mass"),
    ({"ilsi": {"method": "epsilon", "epsilon": 2}}, "ilsi.epsilon"),
    ({"ilsi": {"method": "typical", "masss": 0.9}}, "ilsi.masss"),
    ({"ilsi": {"method": "keyword_boost", "keywords": [""]}}, "ilsi.keywords"),
    ({"ilsi": {"method": "typical", "trace": 10_000}}, "ilsi.trace"),
    ({"ilsi": 42}, "ilsi"),
]


@pytest.mark.parametrize("custom,needle", BAD_GENERATE, ids=[b[1] + str(i) for i, b in enumerate(BAD_GENERATE)])
def test_bad_input_is_400_naming_the_parameter(client, custom, needle):
    r = client.post("/generate", {"text": "hi", "sampling_params": {
        "max_new_tokens": 4, "custom_params": custom}})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]
    assert client.generate("hi", max_new_tokens=4)["meta_info"]["finish_reason"]


def test_dill_processor_refused(client):
    r = client.post("/generate", {"text": "hi", "custom_logit_processor": _dill_processor(),
                                  "sampling_params": {"max_new_tokens": 4}})
    assert r.status_code == 400
    assert "custom_logit_processor" in r.json()["error"]["message"]
    assert client.generate("hi", max_new_tokens=4)["output_ids"]


def test_openai_bad_input(client):
    import openai

    oa = client.openai()
    with pytest.raises(openai.BadRequestError) as e:
        oa.chat.completions.create(model=client.model, messages=[{"role": "user", "content": "x"}],
                                   max_tokens=4, extra_body={"custom_params": {"ilsi": {"method": "eta", "epsilon": -1}}})
    assert "ilsi.epsilon" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        oa.completions.create(model=client.model + "+nope", prompt="x", max_tokens=4)
    assert "+nope" in str(e.value)
    assert oa.completions.create(model=client.model, prompt="x", max_tokens=2).choices


def test_batch_generate_mixes_methods_and_plain(client, hf):
    """One /generate call with a batch of prompts, only some using a method."""
    body = {
        "text": PROMPTS[:2],
        "sampling_params": [
            {"max_new_tokens": 8, "temperature": 0,
             "custom_params": {"ilsi": {"method": "penalty_decoding", "penalty": 3.0, "window": 8}}},
            {"max_new_tokens": 8, "temperature": 0},
        ],
    }
    r = client.post("/generate", body)
    assert r.status_code == 200, r.text
    first, second = r.json()
    assert first["meta_info"]["ilsi"]["method"] == "penalty_decoding"
    assert "ilsi" not in second["meta_info"]
    assert second["output_ids"] == hf.greedy(hf.encode(PROMPTS[1]), 8, None)


def test_streaming_generate_with_method(client):
    import requests

    body = {"text": PROMPTS[0], "stream": True, "sampling_params": {
        "max_new_tokens": 8, "temperature": 0, "custom_params": {"ilsi": "penalty_decoding"}}}
    chunks = []
    with requests.post(client.base_url + "/generate", json=body, stream=True, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                chunks.append(json.loads(line[6:]))
    direct = client.generate(PROMPTS[0], max_new_tokens=8, ilsi="penalty_decoding")
    assert chunks[-1]["output_ids"] == direct["output_ids"]
    # every chunk reports the method; the last one the whole request's cost
    assert all(c["meta_info"]["ilsi"]["method"] == "penalty_decoding" for c in chunks)
    assert chunks[-1]["meta_info"]["ilsi"]["cost"]["steps"] == len(direct["output_ids"])


def test_chained_methods_apply_in_order(client, hf):
    """``then``: penalty decoding followed by keyword boosting, token for token
    equal to the two references applied in the same order."""
    first = {"penalty": 3.0, "window": 8}
    second = {"keywords": ["self"], "strength": 3.0}
    out = client.generate(PROMPTS[0], max_new_tokens=20, ilsi={
        "method": "penalty_decoding", **first, "then": [{"method": "keyword_boost", **second}]})
    t1 = make_transform("penalty_decoding", full_params("penalty_decoding", first), hf.eos_ids)
    t2 = make_transform("keyword_boost", full_params("keyword_boost", second), hf.eos_ids,
                        0.0, hf.tokenizer)
    expected = hf.greedy(hf.encode(PROMPTS[0]), 20, lambda row, p, o: t2(t1(row, p, o), p, o))
    assert out["output_ids"] == expected
    report = out["meta_info"]["ilsi"]
    assert report["method"] == "penalty_decoding"
    assert [step["method"] for step in report["then"]] == ["keyword_boost"]
    only_first = client.generate(PROMPTS[0], max_new_tokens=20,
                                 ilsi={"method": "penalty_decoding", **first})
    assert only_first["output_ids"] != expected  # the second method did something


def test_bad_chain_is_400(client):
    for then, needle in [([{"method": "nope"}], "ilsi.then[0].method"),
                         ([{"method": "typical", "mass": 3}], "ilsi.mass"),
                         ([{"method": "mbr"}], "then[0].method"),
                         ("typical", "ilsi.then")]:
        r = client.post("/generate", {"text": "x", "sampling_params": {
            "max_new_tokens": 2, "custom_params": {"ilsi": {"method": "eta", "then": then}}}})
        assert r.status_code == 400, r.text
        assert needle in r.json()["error"]["message"]


def test_lexical_constraints_hold_in_every_output(client, hf):
    """Required phrases appear in 100% of outputs, banned ones in 0%, sampled or greedy."""
    ilsi = {"method": "lexical_constraints", "include": ["import", "return"],
            "exclude": ["self", "def"], "force_after": 6}

    def run(i):
        return client.generate(PROMPTS[i % 3], max_new_tokens=24, temperature=(i % 3) * 0.6,
                               ilsi=ilsi)

    from sglang_ilsi.methods.constrained.phrases import contains, spellings

    banned = [s for word in ilsi["exclude"] for s in spellings(word, hf.tokenizer)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(pool.map(run, range(24)))
    for i, out in enumerate(outs):
        assert "import" in out["text"] and "return" in out["text"], out["text"]
        # The ban is on token sequences (the method's documented contract): a
        # sampled token such as "codefi" can still spell "def" inside it.
        assert not any(contains(out["output_ids"], s) for s in banned), out["text"]
        if i % 3 == 0:  # greedy
            assert "self" not in out["text"] and "def" not in out["text"], out["text"]
        assert out["meta_info"]["ilsi"]["stats"]["satisfied"] == 2


def _parses(grammar: str, text: str) -> bool:
    import ast
    import csv
    import datetime
    import io
    import re

    if grammar in ("json-value", "json-object", "function-call"):
        value = json.loads(text)
        return grammar == "json-value" or isinstance(value, dict)
    if grammar in ("arithmetic", "python-expression"):
        ast.parse(text, mode="eval")  # parsed, never evaluated
        return True
    if grammar == "sql-select":
        import sqlglot

        return sqlglot.parse_one(text) is not None
    if grammar == "csv":
        return len(list(csv.reader(io.StringIO(text)))) >= 1
    if grammar == "iso-date":
        datetime.date.fromisoformat(text)
        return True
    if grammar == "iso-datetime":
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return True
    if grammar == "yes-no":
        return text.strip().lower() in ("yes", "no")
    if grammar == "number":
        return re.fullmatch(r"[+-]?(\d+(\.\d+)?|\.\d+)([eE][+-]?\d+)?", text) is not None
    raise KeyError(grammar)


# The JSON grammars admit free-text strings and objects the random tiny model
# may never close: json-object and function-call are served on SmolLM2
# (test_e2e_smollm2.py); json-value's acceptance is tested offline (test_grammars.py).
GRAMMARS = ["arithmetic", "python-expression", "sql-select", "csv", "iso-date",
            "iso-datetime", "yes-no", "number"]


@pytest.mark.parametrize("grammar", GRAMMARS)
def test_named_grammars_compose_with_methods(client, grammar):
    """``ilsi.grammar`` names a library grammar; every output parses with a real
    parser. A length target (a logits method) makes the random tiny model finish."""
    outs = []
    for i in range(3):  # greedy: reproducible (a sampled run of a random model may not end)
        outs.append(client.generate(
            PROMPTS[i], max_new_tokens=96, temperature=0.0,
            ilsi={"grammar": grammar, "method": "length_target", "target": 6, "strength": 12.0,
                  "tolerance": 2}))
    for out in outs:
        assert out["meta_info"]["finish_reason"]["type"] == "stop", out["text"]
        assert _parses(grammar, out["text"]), out["text"]
        assert out["meta_info"]["ilsi"]["method"] == "length_target"


def test_grammar_bad_input(client):
    for ilsi, needle in [({"grammar": "nope"}, "ilsi.grammar"),
                         ({"grammar": "json-object", "schema": [1]}, "ilsi.grammar"),
                         ({"grammar": 3}, "ilsi.grammar"),
                         ({"method": "typical", "schema": {}}, "ilsi.schema")]:
        r = client.post("/generate", {"text": "x", "sampling_params": {
            "max_new_tokens": 2, "custom_params": {"ilsi": ilsi}}})
        assert r.status_code == 400, r.text
        assert needle in r.json()["error"]["message"]
    r = client.post("/generate", {"text": "x", "sampling_params": {
        "max_new_tokens": 2, "regex": "a+", "custom_params": {"ilsi": {"grammar": "number"}}}})
    assert r.status_code == 400 and "sampling_params.regex" in r.json()["error"]["message"]


def test_openai_streaming_carries_the_report(client):
    oa = client.openai()
    for kind in ("chat", "completion"):
        if kind == "chat":
            stream = oa.chat.completions.create(
                model=client.model, messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                stream=True, extra_body={"custom_params": {"ilsi": {"method": "typical"}}})
        else:
            stream = oa.completions.create(
                model=client.model + "+eta", prompt=PROMPTS[0], max_tokens=6, stream=True)
        chunks = list(stream)
        reports = [c.model_extra["ilsi"] for c in chunks if c.model_extra and "ilsi" in c.model_extra]
        assert len(reports) == 1, kind
        assert reports[0]["method"] == ("typical" if kind == "chat" else "eta")
        assert reports[0]["cost"]["steps"] >= 1
    plain = list(oa.completions.create(model=client.model, prompt="x", max_tokens=3, stream=True))
    assert not any(c.model_extra and "ilsi" in c.model_extra for c in plain)
