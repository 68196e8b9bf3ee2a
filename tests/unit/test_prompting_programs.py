"""Unit tests of the prompting programs (kind ``program``): their plans, parameter
checks, and the prompts they build, run against a fake engine context."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sglang_ilsi import registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.declaration import kind_of
from sglang_ilsi.methods.prompting import cot, echo_prompt, generation_exploitation, urial
from sglang_ilsi.methods.prompting import zero_shot_cot as zs
from sglang_ilsi.methods.prompting.base import Call, Generated, Program, Prompt, after
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.plan import LOGITS, PLAIN_PLAN, PROGRAM, SOURCE_SUFFIX, SUFFIX_KEY, read

OPEN = IlsiConfig()
PROGRAMS = ("cot", "zero_shot_cot", "echo_prompt", "urial", "generation_exploitation")


def refused(ilsi, param: str, config: IlsiConfig = OPEN) -> str:
    with pytest.raises(IlsiRequestError) as exc:
        read({"ilsi": ilsi}, config)
    assert exc.value.param == param, str(exc.value)
    return str(exc.value)


class FakeEngine:
    """Records every call; answers each with the next scripted text."""

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.batches: list[list[Call]] = []

    async def generate(self, calls: Sequence[Call]) -> list[Generated]:
        self.batches.append(list(calls))
        return [Generated(self.texts.pop(0) if self.texts else "x", 3) for _ in calls]


QUESTION = Prompt("Q: 2+2?")


def run(program, params: dict, engine: FakeEngine, prompt: Prompt = QUESTION):
    return asyncio.run(program.run(engine, prompt, program.validate(params)))


# -- plans -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_program_is_a_server_side_program(name):
    cls = registry.get(name)
    assert kind_of(cls) == PROGRAM and issubclass(cls, Program)
    chosen = read({"ilsi": name}, OPEN)
    assert chosen.kind == PROGRAM and chosen.program.program is cls
    assert chosen.program.decoding is PLAIN_PLAN and not chosen.program.chat


def test_the_decoding_is_a_validated_logits_plan():
    chosen = read({"ilsi": {"method": "zero_shot_cot",
                            "decoding": {"method": "typical", "mass": 0.8}}}, OPEN)
    assert chosen.program.decoding.kind == LOGITS
    assert chosen.program.decoding.logits.params["mass"] == 0.8
    assert "not a logits-stage method" in refused(
        {"method": "cot", "decoding": "self_consistency"}, "decoding.method")
    refused({"method": "cot", "decoding": {"method": "typical", "mass": 2}}, "mass")
    refused({"method": "cot", "decoding": 3}, "decoding")


def test_the_model_suffix_names_a_program():
    chosen = read({SUFFIX_KEY: "zero_shot_cot"}, OPEN)
    assert chosen.kind == PROGRAM and chosen.source == SOURCE_SUFFIX


@pytest.mark.parametrize("ilsi, param", [
    ({"method": "zero_shot_cot", "answer_max_tokens": 0}, "answer_max_tokens"),
    ({"method": "zero_shot_cot", "trigger": 5}, "trigger"),
    ({"method": "zero_shot_cot", "answer_trigger": "x" * 201}, "answer_trigger"),
    ({"method": "zero_shot_cot", "typo": 1}, "typo"),
    ({"method": "zero_shot_cot", "trace": True}, "trace"),
    ({"method": "echo_prompt", "echo_max_tokens": 5000}, "echo_max_tokens"),
    ({"method": "urial", "num_examples": 9}, "num_examples"),
    ({"method": "cot", "num_exemplars": 0}, "num_exemplars"),
    ({"method": "cot", "exemplars": "Q: 1"}, "exemplars"),
    ({"method": "cot", "exemplars": [{"question": "q", "answer": "a"}]}, "exemplars[0]"),
    ({"method": "cot", "exemplars": [{"question": "q", "reasoning": "", "answer": "a"}]},
     "exemplars[0].reasoning"),
    ({"method": "cot", "exemplars": [{"question": "q" * 1001, "reasoning": "r", "answer": "a"}]},
     "exemplars[0].question"),
    ({"method": "cot", "exemplars": [{"question": "q", "reasoning": "r", "answer": "a"}] * 9},
     "exemplars"),
    ({"method": "generation_exploitation", "temperatures": [0.0]}, "temperatures[0]"),
    ({"method": "generation_exploitation", "top_ps": [1.5]}, "top_ps[0]"),
    ({"method": "generation_exploitation", "top_ks": list(range(1, 14))}, "top_ks"),
    ({"method": "generation_exploitation", "temperatures": [0.1] * 12, "top_ps": [0.5] * 12,
      "top_ks": [5] * 12}, "temperatures"),
    ({"method": "cot", "grammar": "yes-no"}, "grammar"),
])
def test_a_bad_parameter_is_refused_by_name(ilsi, param):
    refused(ilsi, param)


def test_programs_cannot_be_chained_or_decode_candidates():
    assert "prompting program" in refused(
        {"method": "self_consistency", "candidates": "cot"}, "method")
    assert "prompting program" in refused({"method": "typical", "then": ["urial"]},
                                          "then[0].method")


def test_a_program_not_enabled_is_refused():
    config = IlsiConfig(methods=("typical",))
    assert "not enabled" in refused("zero_shot_cot", "method", config)


def test_client_exemplars_are_kept():
    given = [{"question": "1+1?", "reasoning": "One and one make 2.", "answer": "2"}]
    chosen = read({"ilsi": {"method": "cot", "exemplars": given}}, OPEN)
    assert chosen.program.params["exemplars"] == given


# -- the prompts they build ----------------------------------------------------------------


def test_after_adds_one_separating_space():
    assert after("Q: x", "T.") == " T." and after("A:\n", "T.") == "T."
    assert after("", "T.") == "T." and after("x", " T.") == " T."


def test_zero_shot_cot_two_calls_and_the_clients_text():
    engine = FakeEngine(" 2 and 2 make 4.", " 4.")
    result = run(zs.ZeroShotCoT, {}, engine)
    (first,), (second,) = engine.batches
    assert first.suffix == " Let's think step by step." and first.max_new_tokens is None
    assert second.suffix == " Let's think step by step. 2 and 2 make 4. Therefore, the answer is"
    assert second.max_new_tokens == 32 and second.stop == ("\n",)
    assert result.text == "Let's think step by step. 2 and 2 make 4. Therefore, the answer is 4."


def test_zero_shot_cot_custom_triggers_after_a_newline():
    engine = FakeEngine("r\n", " y")
    result = run(zs.ZeroShotCoT, {"trigger": "Think.", "answer_trigger": "So:"}, engine,
                 Prompt("question\n"))
    assert engine.batches[1][0].suffix == "Think.r\nSo:"
    assert result.text == "Think.r\nSo: y"


def test_echo_prompt_restates_then_answers():
    engine = FakeEngine("What is 2+2?", " It is 4.")
    result = run(echo_prompt.EchoPrompt, {"then": "Let's think step by step."}, engine)
    (first,), (second,) = engine.batches
    assert first.suffix == ' Let\'s repeat the question. "' and first.stop == ('"',)
    assert first.max_new_tokens == 96
    assert second.suffix == ' Let\'s repeat the question. "What is 2+2?" Let\'s think step by step.'
    assert result.text == 'Let\'s repeat the question. "What is 2+2?" Let\'s think step by ' \
        "step. It is 4."


def test_cot_wraps_the_prompt_in_the_exemplars_format():
    engine = FakeEngine(" 3 + 4 = 7. The answer is 7.")
    result = run(cot.ChainOfThought, {"num_exemplars": 2}, engine, Prompt("What is 3 + 4?"))
    (call,) = engine.batches[0]
    assert call.prefix.startswith("Q: " + cot.EXEMPLARS[0]["question"] + "\nA: ")
    assert call.prefix.count("\nA: ") == 2 and call.prefix.endswith(" The answer is 80.\n\nQ: ")
    assert call.suffix == "\nA:" and call.stop == ("\nQ:",)
    assert result.text == " 3 + 4 = 7. The answer is 7." and result.report["exemplars"] == 2


def test_cot_in_a_chat_puts_the_exemplars_in_turns():
    given = [{"question": "1+1?", "reasoning": "One and one make 2.", "answer": "2"}]
    params = cot.ChainOfThought.validate({"exemplars": given})
    assert cot.ChainOfThought.chat_messages(params) == [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "One and one make 2. The answer is 2."}]
    engine = FakeEngine("a")
    asyncio.run(cot.ChainOfThought.run(engine, Prompt("x", chat=True), params))
    assert engine.batches[0][0].prefix == "" and engine.batches[0][0].suffix == ""


def test_urial_context_and_stop():
    engine = FakeEngine("\nCanberra.\n")
    result = run(urial.Urial, {"num_examples": 1}, engine, Prompt("Name a city."))
    (call,) = engine.batches[0]
    assert call.prefix.startswith("# Instruction\n") and call.prefix.count("# Query:\n```") == 2
    assert call.prefix.endswith("# Query:\n```\n")
    assert call.suffix == "\n```\n\n# Answer:\n```\n" and "# Query:" in call.stop
    assert result.text == "Canberra."
    turns = urial.Urial.chat_messages({"num_examples": 2})
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user", "assistant"]


def test_generation_exploitation_sweep_in_one_batch():
    params = {"temperatures": [0.7], "top_ps": [0.9], "top_ks": [10], "seed": 5}
    engine = FakeEngine("I'm sorry, I cannot help with that.", "Sure, here it is.",
                        "As an AI, no.", "Here you go")
    result = run(generation_exploitation.GenerationExploitation, params, engine)
    (batch,) = engine.batches
    assert [c.role for c in batch] == ["greedy", "temperature=0.7", "top_p=0.9", "top_k=10"]
    assert batch[0].sampling == {"temperature": 0.0, "sampling_seed": 5}
    assert batch[3].sampling == {"temperature": 1.0, "top_p": 1.0, "top_k": 10,
                                 "sampling_seed": 8}
    rows = result.report["configurations"]
    assert [r["refused"] for r in rows] == [True, False, True, False]
    assert rows[0]["marker"] == "i'm sorry" and result.report["not_refused"] == 2
    assert result.text.startswith("Generation exploitation: 2 of 4 decoding configurations")
    assert "temperature=0.7, top_k=10" in result.text and "greedy refused" in result.text


def test_refusal_markers_ignore_case_and_curly_apostrophes():
    marker = generation_exploitation.refusal_marker
    assert marker("I\u2019M SORRY, but no") == "i'm sorry"
    assert marker("The capital is Paris.") is None


def test_chat_messages_join_the_clients_system_message():
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest

    from sglang_ilsi.engine.http.programs import add_chat_messages

    request = ChatCompletionRequest(model="m", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    add_chat_messages(request, urial.Urial.chat_messages({"num_examples": 1}))
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert request.messages[0].content == urial.PREAMBLE + "\n\nBe brief."
    assert request.messages[-1].content == "Hi"
