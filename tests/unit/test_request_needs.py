"""HTTP-side preparation of the multi-distribution methods' needs: second
prompts built from text or token ids, default layers, aux-model names."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from sglang_ilsi import plan, registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.engine.http import request_needs
from sglang_ilsi.methods.base import SECOND_IDS
from sglang_ilsi.params import IlsiRequestError, validate_params
from sglang_ilsi.plan import MethodChoice
from sglang_ilsi_lab.models import catalog

FACTS = request_needs.ModelFacts(num_layers=4, vocab_size=512)
PROMPT = "Q: 23+45-12=?\nA:"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(str(catalog.prepare("lab-target")))


def _choice(method: str, **params) -> MethodChoice:
    full = validate_params(registry.get(method).params, params)
    return MethodChoice(method, registry.get(method).prepare(full, None), 0, "request")


def _prepare(choice, prompt, tok, config=None, chat_ids=None):
    request_needs.check_and_prepare(choice, config or IlsiConfig(), FACTS, prompt, tok,
                                    chat_ids)
    return choice.params


def test_remove_from_text_and_from_token_ids(tok):
    expected = tok.encode("Q: 23+45=?\nA:")
    assert _prepare(_choice("cad", remove=["-12"]), PROMPT, tok)[SECOND_IDS] == expected
    from_ids = _prepare(_choice("cad", remove=["-12"]), tok.encode(PROMPT), tok)
    assert from_ids[SECOND_IDS] == expected


def test_prefix_and_defaults(tok):
    ids = tok.encode(PROMPT)
    got = _prepare(_choice("rose", prefix="Be wrong.\n"), ids, tok)[SECOND_IDS]
    assert got == tok.encode("Be wrong.\n", add_special_tokens=False) + ids
    # CFG's default: the unconditional prompt; no BOS in this tokenizer → last token
    assert _prepare(_choice("cfg"), PROMPT, tok)[SECOND_IDS] == ids[-1:]
    # ROSE's default reverse prompt goes before the prompt on /generate
    from sglang_ilsi.methods.disturbed_prompt.rose import REVERSE

    assert _prepare(_choice("rose"), PROMPT, tok)[SECOND_IDS] == tok.encode(REVERSE + PROMPT)


def test_multi_input_cd_puts_the_irrelevant_passage_in_place(tok):
    choice = _choice("multi_input_cd", passage="23+45", irrelevant="98+76")
    expected = tok.encode("Q: 98+76-12=?\nA:")
    assert _prepare(choice, PROMPT, tok)[SECOND_IDS] == expected
    from_ids = _choice("multi_input_cd", passage="23+45", irrelevant="98+76")
    assert _prepare(from_ids, tok.encode(PROMPT), tok)[SECOND_IDS] == expected
    # without passage/irrelevant, the generic second-prompt parameters still serve
    generic = _choice("multi_input_cd", second_prompt="Q: 1+1=?\nA:")
    assert _prepare(generic, PROMPT, tok)[SECOND_IDS] == tok.encode("Q: 1+1=?\nA:")


def test_chat_messages_get_the_substitution():
    from types import SimpleNamespace

    chat_tok = AutoTokenizer.from_pretrained(str(catalog.prepare("smollm2-135m-instruct")))
    messages = [{"role": "system", "content": "Use the passage."},
                {"role": "user", "content": "Passage: Alice lives in Paris. Where does she live?"}]
    choice = _choice("multi_input_cd", passage="Paris", irrelevant="Rome")
    got = request_needs.chat_second_ids(choice, SimpleNamespace(messages=messages), chat_tok)
    swapped = [messages[0], {"role": "user",
                             "content": "Passage: Alice lives in Rome. Where does she live?"}]
    assert got == list(chat_tok.apply_chat_template(swapped, tokenize=True,
                                                    add_generation_prompt=True,
                                                    return_dict=False))


def test_chat_ids_win(tok):
    got = _prepare(_choice("cad", remove=["x"]), PROMPT, tok, chat_ids=[5, 6, 7])
    assert got[SECOND_IDS] == [5, 6, 7]


@pytest.mark.parametrize("method,params,needle", [
    ("cad", {}, "ilsi.remove: cad needs a second context"),
    ("cad", {"remove": ["zzz"]}, "ilsi.remove[0]: not found in the prompt"),
    ("cad", {"remove": ["Q"], "second_prompt": "x"}, "give only one of"),
    ("cfg", {"system": "x"}, "ilsi.system: only for chat requests"),
    ("multi_input_cd", {"passage": "zzz", "irrelevant": "y"}, "ilsi.passage: not found"),
    ("multi_input_cd", {"irrelevant": "y"}, "ilsi.passage: give the relevant passage"),
    ("multi_input_cd", {"passage": "Q", "irrelevant": "y", "remove": ["A"]},
     "ilsi.remove: give either passage and irrelevant"),
    ("dola", {"layers": [4]}, "ilsi.layers: layer 4 does not exist"),
    ("contrastive_decoding", {"amateur": "ghost"}, "ilsi.amateur: no auxiliary model"),
])
def test_bad_needs(tok, method, params, needle):
    with pytest.raises(IlsiRequestError) as e:
        _prepare(_choice(method, **params), PROMPT, tok)
    assert needle in str(e.value)


def test_default_layers_and_known_aux(tok):
    assert _prepare(_choice("dola"), PROMPT, tok)["layers"] == [0]
    cfg = IlsiConfig(aux_models={"amateur": "/somewhere"})
    _prepare(_choice("contrastive_decoding"), PROMPT, tok, config=cfg)  # no error
    assert plan.requirements(_choice("contrastive_decoding")).aux_models == ("amateur",)
