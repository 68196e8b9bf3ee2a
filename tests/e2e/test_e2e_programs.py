"""End-to-end: prompting programs run inside the server, per request.

The exactness oracle: under greedy decoding each program's text equals the same
steps run by plain transformers on the same tiny model (``HFReference``: greedy
tokens, decoded, cut at the step's stop strings), the steps built with the
programs' own prompt pieces. Usage counts cover every step; OpenAI clients reach
the programs unchanged (``extra_body`` and the model-name suffix).
"""

from __future__ import annotations

import json

import pytest
import requests
from reference_decoding import HFReference, make_transform

from sglang_ilsi.methods.prompting import cot, echo_prompt, urial
from sglang_ilsi.methods.prompting import zero_shot_cot as zs
from sglang_ilsi.methods.prompting.base import Prompt

pytestmark = pytest.mark.server

PROMPT = "Q: a b c d?\nA:"
TOKENS = 6


@pytest.fixture(scope="module")
def client(tiny_server):
    return tiny_server


class Steps:
    """The reference: each step greedy in transformers, as the server runs it."""

    def __init__(self, hf: HFReference, prompt: str | list[int], transform=None):
        self.hf, self.prompt, self.transform = hf, prompt, transform

    def ids(self, prefix: str, suffix: str) -> list[int]:
        if isinstance(self.prompt, str):
            return self.hf.encode(prefix + self.prompt + suffix)
        encode = self.hf.tokenizer.encode
        return encode(prefix, add_special_tokens=False) + list(self.prompt) + encode(
            suffix, add_special_tokens=False)

    def __call__(self, suffix: str = "", n: int = TOKENS, stop: tuple[str, ...] = (),
                 prefix: str = "") -> str:
        transform = self.transform() if self.transform else None
        out = self.hf.greedy(self.ids(prefix, suffix), n, transform)
        text = self.hf.tokenizer.decode(out, skip_special_tokens=True)
        cuts = [text.find(s) for s in stop if s in text]
        return text[:min(cuts)] if cuts else text


def program(client, ilsi, prompt=PROMPT, max_new_tokens: int = TOKENS, **sampling) -> dict:
    out = client.generate(prompt, max_new_tokens=max_new_tokens, ilsi=ilsi, **sampling)
    report = out["meta_info"]["ilsi"]
    name = ilsi if isinstance(ilsi, str) else ilsi["method"]
    assert report["method"] == name and report["family"] == "context-aware/prompting"
    steps = report["steps"]
    assert out["meta_info"]["completion_tokens"] == sum(s["completion_tokens"] for s in steps)
    assert report["cost"]["completion_tokens"] == out["meta_info"]["completion_tokens"]
    assert out["meta_info"]["prompt_tokens"] == report["cost"]["prompt_tokens"]
    return out


def zero_shot_reference(ref: Steps, tail: str, answer_tokens: int = 4) -> str:
    prompt = Prompt(tail)
    first = zs.reasoning_suffix(prompt, zs.REASONING_TRIGGER)
    reasoning = ref(first)
    second = zs.answer_suffix(prompt, zs.REASONING_TRIGGER, reasoning, zs.ANSWER_TRIGGER)
    return second.removeprefix(" ") + ref(second, answer_tokens, ("\n",))


def test_zero_shot_cot_equals_its_steps_in_transformers(client, hf):
    out = program(client, {"method": "zero_shot_cot", "answer_max_tokens": 4})
    assert out["text"] == zero_shot_reference(Steps(hf, PROMPT), PROMPT)
    report = out["meta_info"]["ilsi"]
    assert [s["role"] for s in report["steps"]] == ["reasoning", "answer"]
    assert report["cost"]["generate_calls"] == 2
    assert out["text"].startswith("Let's think step by step.")


def test_token_prompts_get_the_suffix_tokens(client, hf):
    ids = hf.encode(PROMPT)
    out = program(client, {"method": "zero_shot_cot", "answer_max_tokens": 4}, prompt=ids)
    tail = hf.tokenizer.decode(ids[-8:])
    assert out["text"] == zero_shot_reference(Steps(hf, ids), tail)


def test_the_decoding_method_decodes_every_step(client, hf):
    params = {"mass": 0.5, "min_tokens_to_keep": 1}
    out = program(client, {"method": "zero_shot_cot", "answer_max_tokens": 4,
                           "decoding": {"method": "typical", **params}})
    ref = Steps(hf, PROMPT, lambda: make_transform("typical", params, hf.eos_ids))
    assert out["text"] == zero_shot_reference(ref, PROMPT)
    assert out["meta_info"]["ilsi"]["decoding"]["method"] == "typical"


def test_echo_prompt_equals_its_steps(client, hf):
    out = program(client, {"method": "echo_prompt", "echo_max_tokens": 5})
    ref, prompt = Steps(hf, PROMPT), Prompt(PROMPT)
    echo = ref(echo_prompt.echo_suffix(prompt, echo_prompt.ECHO_TRIGGER), 5, ('"',))
    second = echo_prompt.answer_suffix(prompt, echo_prompt.ECHO_TRIGGER, echo, "")
    assert out["text"] == second.removeprefix(" ") + ref(second)


def test_cot_and_urial_equal_one_wrapped_generation(client, hf):
    ref = Steps(hf, "What is 3 + 4?")
    out = program(client, {"method": "cot", "num_exemplars": 2}, prompt="What is 3 + 4?")
    call = cot.ChainOfThought.call(Prompt("What is 3 + 4?"), {"num_exemplars": 2, "exemplars": []})
    assert out["text"] == ref(call.suffix, stop=cot.STOP, prefix=call.prefix)
    out = program(client, {"method": "urial", "num_examples": 1}, prompt="What is 3 + 4?")
    call = urial.Urial.call(Prompt("x"), {"num_examples": 1})
    assert out["text"] == ref(call.suffix, stop=urial.STOP, prefix=call.prefix).strip()


def test_generation_exploitation_sweeps_in_one_batched_request(client, hf):
    ilsi = {"method": "generation_exploitation", "temperatures": [0.7], "top_ps": [0.9],
            "top_ks": [5], "seed": 1}
    out = program(client, ilsi, max_new_tokens=4)
    report = out["meta_info"]["ilsi"]
    assert report["cost"]["generate_calls"] == 1
    rows = report["configurations"]
    assert [r["configuration"] for r in rows] == ["greedy", "temperature=0.7", "top_p=0.9",
                                                  "top_k=5"]
    assert rows[0]["text"] == Steps(hf, PROMPT)("", 4)  # the greedy row is plain greedy
    assert out["text"].startswith(f"Generation exploitation: {report['not_refused']} of 4")


def test_openai_clients_reach_every_program_unchanged(client):
    oa = client.openai()
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    for name in ("zero_shot_cot", "cot", "echo_prompt", "urial", "generation_exploitation"):
        ilsi = {"method": name}
        if name == "generation_exploitation":
            ilsi.update(temperatures=[1.0], top_ps=[], top_ks=[])
        resp = oa.chat.completions.create(model=client.model, messages=messages, max_tokens=4,
                                          temperature=0,
                                          extra_body={"custom_params": {"ilsi": ilsi}})
        report = resp.model_extra["ilsi"]
        assert report["method"] == name, name
        assert resp.choices[0].message.content == report_text(report, resp), name
        assert resp.usage.completion_tokens == sum(s["completion_tokens"]
                                                   for s in report["steps"]), name
    suffixed = oa.chat.completions.create(model=client.model + "+zero_shot_cot",
                                          messages=messages, max_tokens=4, temperature=0)
    report = suffixed.model_extra["ilsi"]
    assert report["source"] == "model_suffix"
    assert suffixed.choices[0].message.content.startswith("Let's think step by step.")
    completion = oa.completions.create(model=client.model + "+echo_prompt", prompt=PROMPT,
                                       max_tokens=4, temperature=0)
    assert completion.choices[0].text.startswith("Let's repeat the question.")


def report_text(report: dict, resp) -> str:
    """What the client should have got, from the report's own steps."""
    content, last = resp.choices[0].message.content, report["steps"][-1]["text"]
    if report["method"] == "cot":
        return last
    if report["method"] == "urial":
        return last.strip()
    if report["method"] == "generation_exploitation":
        assert content.startswith("Generation exploitation:")
        return content
    assert content.endswith(last)
    return content


def test_chat_requests_get_the_programs_turns(client):
    oa = client.openai()
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    plain = oa.chat.completions.create(model=client.model, messages=messages, max_tokens=2,
                                       temperature=0)
    with_turns = oa.chat.completions.create(
        model=client.model, messages=messages, max_tokens=2, temperature=0,
        extra_body={"custom_params": {"ilsi": {"method": "cot", "num_exemplars": 3}}})
    # the exemplar turns are in the prompt: many more prompt tokens than the plain request
    assert with_turns.usage.prompt_tokens > plain.usage.prompt_tokens + 100


def test_streaming_gets_the_programs_text_once(client):
    body = {"text": PROMPT, "stream": True, "sampling_params": {
        "max_new_tokens": 3, "temperature": 0,
        "custom_params": {"ilsi": {"method": "zero_shot_cot", "answer_max_tokens": 2}}}}
    chunks = []
    with requests.post(client.base_url + "/generate", json=body, stream=True, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                chunks.append(json.loads(line[6:]))
    plain = client.generate(PROMPT, max_new_tokens=3,
                            ilsi={"method": "zero_shot_cot", "answer_max_tokens": 2})
    assert chunks[-1]["text"] == plain["text"]
    assert chunks[-1]["meta_info"]["ilsi"]["method"] == "zero_shot_cot"
    oa = client.openai()
    stream = list(oa.chat.completions.create(
        model=client.model, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
        temperature=0, stream=True,
        extra_body={"custom_params": {"ilsi": {"method": "zero_shot_cot"}}}))
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    reports = [c.model_extra["ilsi"] for c in stream if c.model_extra and "ilsi" in c.model_extra]
    assert text.startswith("Let's think step by step.") and len(reports) == 1


@pytest.mark.parametrize("ilsi,needle", [
    ({"method": "zero_shot_cot", "answer_max_tokens": 0}, "ilsi.answer_max_tokens"),
    ({"method": "cot", "exemplars": [{"question": "q"}]}, "ilsi.exemplars[0]"),
    ({"method": "generation_exploitation", "top_ks": [0]}, "ilsi.top_ks[0]"),
    ({"method": "urial", "decoding": {"method": "mbr"}}, "ilsi.decoding.method"),
    ({"method": "skeleton_of_thought"}, "runs only on the client"),
])
def test_bad_program_input_is_400(client, ilsi, needle):
    r = client.post("/generate", {"text": "x", "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"ilsi": ilsi}}})
    assert r.status_code == 400 and needle in r.text, r.text
    oa = client.openai()
    import openai

    with pytest.raises(openai.BadRequestError) as exc:
        oa.chat.completions.create(model=client.model, messages=[{"role": "user", "content": "x"}],
                                   max_tokens=2, extra_body={"custom_params": {"ilsi": ilsi}})
    assert needle in str(exc.value)


def test_a_batch_or_n_is_refused(client):
    r = client.post("/generate", {"text": ["a", "b"], "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"ilsi": "zero_shot_cot"}}})
    assert r.status_code == 400 and "one prompt per request" in r.text
    r = client.post("/generate", {"text": "a", "sampling_params": {
        "max_new_tokens": 2, "n": 2, "custom_params": {"ilsi": "zero_shot_cot"}}})
    assert r.status_code == 400 and "ilsi.n" in r.text


def test_frontend_primitives_build_the_same_prompts(client):
    """``sglang_ilsi.lang``'s primitives, run as SGLang frontend programs, give the
    server-side programs' text (the same pieces, greedy)."""
    import sglang as sgl

    from sglang_ilsi import lang

    @sgl.function
    def zero_shot(s, prompt):
        s += prompt
        lang.zero_shot_cot(s, "answer", max_tokens=TOKENS, answer_max_tokens=4)

    @sgl.function
    def few_shot(s, question):
        lang.cot(s, "answer", question, num_exemplars=2, max_tokens=TOKENS)

    backend = sgl.RuntimeEndpoint(client.base_url)
    state = zero_shot.run(prompt=PROMPT, backend=backend)
    server = client.generate(PROMPT, max_new_tokens=TOKENS,
                             ilsi={"method": "zero_shot_cot", "answer_max_tokens": 4})
    assert state["answer"] == server["text"]
    state = few_shot.run(question="What is 3 + 4?", backend=backend)
    server = client.generate("What is 3 + 4?", max_new_tokens=TOKENS,
                             ilsi={"method": "cot", "num_exemplars": 2})
    assert state["answer"] == server["text"]
