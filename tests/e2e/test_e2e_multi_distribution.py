"""End-to-end: methods that combine several next-token distributions, inside a
real SGLang server on CPU, batched across requests.

The lab pair (``lab/sglang_ilsi_lab/models/lab_pair``) serves as target with two
co-resident auxiliary models on its tokenizer: ``amateur`` (the 0.27 M draft)
and ``early`` (an earlier checkpoint of the target). For every method the
server's greedy tokens equal a transformers loop over the same models with the
method's plain reference, alone and inside a busy batch of mixed methods; each
method composes with a JSON-schema grammar; bad input is a 400 naming the
parameter; bad launch flags stop the server with a clear message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import LAB_JSON_PROMPT as JSON_PROMPT
from conftest import LAB_JSON_SCHEMA as SCHEMA
from conftest import lab_pair_paths
from multi_reference_decoding import MultiHF

from sglang_ilsi import registry
from sglang_ilsi.params import validate_params

pytestmark = pytest.mark.server

PROMPTS = ["Q: 23+45-12=?\nA:", "Q: 12+34-5+67-8=?\nA:", "Q: 41+18=?\nA:"]
CONTEXT = "Alice is a 34-year-old teacher from Paris."

# (method, request params): chosen so that each method changes some greedy
# output of the (confident) lab target on these prompts.
CASES = [
    ("contrastive_decoding", {"alpha": 0.05}),
    ("contrastive_decoding_beta", {"alpha": 0.05, "beta": 1.0}),
    ("dexperts", {"expert": "early", "anti_expert": "amateur", "alpha": 1.5}),
    ("linear_combination", {"models": ["amateur", "early"], "weights": [-0.7, 0.5]}),
    ("cad", {"alpha": 1.0, "remove": ["A:"]}),
    ("multi_input_cd", {"beta": 1.0, "passage": "=?", "irrelevant": "=18"}),
    ("instructive_decoding", {"epsilon": 1.0}),
    ("rose", {"alpha": 1.0, "prefix": "Q: 9+9=?\nA: 5\n#### 5\n"}),
    ("pmi_decode", {"lam": 2.0, "top_p": 0.99, "second_prompt": "Q: 9+9=?\nA:"}),
    ("cfg", {"gamma": 4.0}),
    ("dola", {"layers": [0, 1, 2, 3], "alpha": 0.001}),
    # all tokens evolved: a top-k cut would make near-ties at its edge flip the scores
    ("sled", {"layers": [0, 1, 2, 3], "evolution_rate": 50.0, "evolution_scale": 512}),
]
MULTI = {m for m in registry.logits_methods()
         if registry.get(m).needs & {"aux_model", "second_context", "layer_logits"}}


def _paths() -> tuple[str, dict[str, str]]:
    return lab_pair_paths()


@pytest.fixture(scope="module")
def client(lab_pair_server):
    return lab_pair_server


@pytest.fixture(scope="module")
def hf():
    target, aux = _paths()
    return MultiHF(target, aux)


def _second_ids(hf: MultiHF, method: str, params: dict, prompt: str) -> list[int] | None:
    """The second prompt built independently of the server's code."""
    if not registry.get(method).needs & {"second_context"}:
        return None
    if params.get("second_prompt"):
        return hf.encode(params["second_prompt"])
    if params.get("passage"):
        return hf.encode(prompt.replace(params["passage"], params["irrelevant"], 1))
    if params.get("remove"):
        text = prompt
        for part in params["remove"]:
            text = text.replace(part, "", 1)
        return hf.encode(text)
    if params.get("prefix"):
        return hf.encode(params["prefix"] + prompt)
    if method == "instructive_decoding":
        from sglang_ilsi.methods.disturbed_prompt.instructive_decoding import OPPOSITE

        return hf.encode(OPPOSITE + prompt)
    if method == "cfg":  # no BOS in the lab tokenizer: the prompt's last token
        return hf.encode(prompt)[-1:]
    raise AssertionError(method)


def _expected(hf: MultiHF, method: str, params: dict, prompt: str, n: int) -> list[int]:
    full = validate_params(registry.get(method).params, params)
    return hf.greedy(hf.encode(prompt), n, method, full, _second_ids(hf, method, params, prompt))


def test_every_multi_distribution_method_is_covered():
    assert {m for m, _ in CASES} == MULTI


@pytest.mark.parametrize("method,params", CASES, ids=[c[0] for c in CASES])
def test_greedy_tokens_equal_reference(client, hf, method, params):
    changed = False
    for prompt in PROMPTS:
        out = client.generate(prompt, max_new_tokens=16, ilsi={"method": method, **params})
        expected = _expected(hf, method, params, prompt, 16)
        assert out["output_ids"] == expected, (method, prompt)
        report = out["meta_info"]["ilsi"]
        assert report["method"] == method and report["cost"]["steps"] == len(expected)
        assert "steps_without_method" not in report["cost"]
        needs = registry.get(method).needs
        if "aux_model" in needs:
            # at least one token per step (a prompt prefix the radix cache
            # shares with an earlier request reuses its aux KV)
            assert report["cost"]["aux_model_tokens"] >= len(expected)
        if "second_context" in needs:
            assert report["cost"]["extra_forward_tokens"] > 0
            assert "__second_ids" not in report["params"]
        changed |= expected != hf.greedy(hf.encode(prompt), 16, None)
    assert changed, f"{method} never changed the greedy output: is it applied?"


def test_dola_reports_its_premature_layers(client):
    out = client.generate(PROMPTS[0], max_new_tokens=8, ilsi={"method": "dola"})
    report = out["meta_info"]["ilsi"]
    assert report["params"]["layers"] == [0]  # default for 4 layers: even layers below 2
    counts = report["stats"]["premature_layer_counts"]
    assert sum(counts.values()) == len(out["output_ids"])


def test_second_context_shares_the_prompt_prefix(client):
    # "Q: 23+45-12=?\nA:" without its last part shares the leading tokens
    out = client.generate(PROMPTS[0], max_new_tokens=4,
                          ilsi={"method": "cad", "remove": ["12=?\nA:"]})
    assert out["meta_info"]["ilsi"]["cost"]["shared_prefix_tokens"] > 0


def test_batch_isolation_with_mixed_methods(client):
    """16 concurrent greedy requests, mixed methods (and plain), each equal to
    the same request served alone."""
    jobs = [(PROMPTS[i % 3], CASES[i % len(CASES)]) for i in range(14)]
    jobs += [(PROMPTS[0], (None, {})), (PROMPTS[2], ("typical", {"mass": 0.5}))]

    def run(job):
        prompt, (method, params) = job
        ilsi = {"method": method, **params} if method else None
        return client.generate(prompt, max_new_tokens=12, ilsi=ilsi)["output_ids"]

    alone = [run(job) for job in jobs]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(run, jobs))
    assert together == alone


@pytest.mark.parametrize("method,params", CASES, ids=[c[0] for c in CASES])
def test_composes_with_a_json_schema_grammar(client, method, params):
    params = {k: v for k, v in params.items() if k not in ("remove", "second_prompt", "passage")}
    if method in ("cad", "pmi_decode"):
        params["remove"] = [CONTEXT]
    if method == "multi_input_cd":
        params.update(passage=CONTEXT, irrelevant="Bob is a 50-year-old chef from Rome.")
    out = client.generate(JSON_PROMPT, max_new_tokens=48, ilsi={"method": method, **params},
                          json_schema=json.dumps(SCHEMA))
    value = json.loads(out["text"])
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)
    assert out["meta_info"]["ilsi"]["method"] == method


@pytest.mark.parametrize("ilsi,needle", [
    ({"method": "contrastive_decoding", "amateur": "nope"}, "ilsi.amateur: no auxiliary model "
     "named 'nope'"),
    ({"method": "dexperts", "expert": "", "anti_expert": "ghost"}, "ilsi.anti_expert"),
    ({"method": "dola", "layers": [2, 9]}, "ilsi.layers: layer 9 does not exist"),
    ({"method": "sled", "layers": [1, 1]}, "ilsi.layers: a layer is listed twice"),
    ({"method": "contrastive_decoding", "alpha": 1.5}, "ilsi.alpha: must be <= 1"),
    ({"method": "cad", "alpha": -1}, "ilsi.alpha: must be >= 0"),
    ({"method": "cad"}, "ilsi.remove: cad needs a second context"),
    ({"method": "cad", "remove": ["not in the prompt"]}, "ilsi.remove[0]: not found"),
    ({"method": "cad", "remove": ["Q"], "prefix": "x"}, "give only one of"),
    ({"method": "multi_input_cd", "passage": "not in it", "irrelevant": "x"},
     "ilsi.passage: not found in the prompt"),
    ({"method": "multi_input_cd", "irrelevant": "x"}, "ilsi.passage: give the relevant"),
    ({"method": "rose", "system": "be bad"}, "ilsi.system: only for chat requests"),
    ({"method": "linear_combination", "models": ["amateur"], "weights": [1, 2]},
     "ilsi.weights: expected 1 weights"),
])
def test_bad_input_is_400_naming_the_parameter(client, ilsi, needle):
    r = client.post("/generate", {"text": PROMPTS[0], "sampling_params": {
        "max_new_tokens": 4, "custom_params": {"ilsi": ilsi}}})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]
    assert client.generate(PROMPTS[1], max_new_tokens=4)["output_ids"]  # still serving


def test_openai_completions_reach_the_methods(client, hf):
    oa = client.openai()
    for method, params in CASES[:1] + CASES[4:5] + CASES[9:10]:
        r = oa.completions.create(model=client.model, prompt=PROMPTS[1], max_tokens=8,
                                  temperature=0, extra_body={"custom_params": {
                                      "ilsi": {"method": method, **params}}})
        expected = _expected(hf, method, params, PROMPTS[1], 8)
        assert r.choices[0].text == hf.tokenizer.decode(expected, skip_special_tokens=True)
        assert r.model_extra["ilsi"]["method"] == method


def test_batched_generate_builds_one_second_context_per_prompt(client, hf):
    params = {"alpha": 1.0, "remove": ["Q: "]}
    r = client.post("/generate", {"text": PROMPTS[:2], "sampling_params": {
        "max_new_tokens": 10, "temperature": 0,
        "custom_params": {"ilsi": {"method": "cad", **params}}}})
    assert r.status_code == 200, r.text
    for prompt, out in zip(PROMPTS[:2], r.json()):
        assert out["output_ids"] == _expected(hf, "cad", params, prompt, 10)


# -- launch-time refusals ---------------------------------------------------------------

def _launch(flags: list[str], target: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sglang.launch_server", "--model-path", target, "--device",
         "cpu", "--port", "1", *flags], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("flag,needle", [
    ("amateur={tiny}", "--ilsi-aux-model amateur: tokenizer differs from the target's"),
    ("amateur=/nonexistent/model", "--ilsi-aux-model amateur: no model folder"),
    ("9bad={tiny}", "--ilsi-aux-model: bad name '9bad'"),
    ("no-equals-sign", "--ilsi-aux-model: expected NAME=PATH"),
])
def test_bad_aux_model_flags_stop_the_launch(tiny_model_path, flag, needle):
    target, _ = _paths()
    done = _launch(["--ilsi-aux-model", flag.format(tiny=tiny_model_path)], target)
    assert done.returncode != 0
    assert needle in done.stderr, done.stderr[-2000:]
