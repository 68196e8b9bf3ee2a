"""End-to-end: reward models beside the policy, and the searches that use them.

One server: the lab policy ``lab-target-early`` with the lab's trained process
and outcome reward models and the likelihood verifier (``lab-verifier``: lab-target
read through its own likelihood) co-resident (``--ilsi-reward-model``); a second one
that uses the first's process model over HTTP (``--ilsi-reward-url``). Oracles:

- the reward models in plain transformers (``tests/reference/reward_reference.py``);
- the searches of ``sglang_ilsi_lab.client_search`` (written apart from the
  server's), replaying the tree the server reports: scoring every node with
  transformers and deciding which nodes to grow and which leaf answers, they
  must agree with the server node for node (SGLang honours per-request seeds
  only under deterministic inference, which its CPU attention backend lacks);
  greedy searches, deterministic, answer like greedy decoding;
- best-of-N and weighted self-consistency recomputed from the candidates the
  server reports and the reference rewards.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import start_server
from reward_reference import RewardReference
from transformers import AutoTokenizer

from sglang_ilsi_lab.client_search import ClientSearch, mcts
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import lab
from sglang_ilsi_lab.server_process import free_port

pytestmark = pytest.mark.server

POLICY = str(lab.folder("lab-target-early"))
PRM, ORM = str(lab.folder("lab-prm")), str(lab.folder("lab-orm"))
VERIFIER = str(lab.folder("lab-verifier"))
ITEMS = synthetic.arithmetic(6, seed=1, difficulty=3)
MAX_NEW = 48


@pytest.fixture(scope="module")
def client():
    yield from start_server(POLICY, ["--ilsi", "--ilsi-reward-model", f"prm={PRM}",
                                     "--ilsi-reward-model", f"orm={ORM}",
                                     "--ilsi-reward-model", f"verifier={VERIFIER}"])


@pytest.fixture(scope="module")
def remote_client(client):
    yield from start_server(POLICY, ["--ilsi", "--ilsi-reward-url", f"prm={client.base_url}"])


@pytest.fixture(scope="module")
def refs():
    return {"prm": RewardReference(PRM), "orm": RewardReference(ORM),
            "verifier": RewardReference(VERIFIER)}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(POLICY)


def _run(client, prompt: str, ilsi: dict, seed: int) -> dict:
    return client.generate(prompt, MAX_NEW, temperature=1.0, ilsi=ilsi, sampling_seed=seed)


# -- the reward models ---------------------------------------------------------------


def test_reward_scores_equal_transformers(client, refs):
    item = ITEMS[0]
    wrong_first = item["answer"].replace("=", "=1", 1)
    solutions = [refs["prm"].steps(item["answer"]), refs["prm"].steps(wrong_first),
                 [" 1+1=2\n"], refs["prm"].steps(item["answer"])[:1]]
    for name in ("prm", "orm", "verifier"):
        r = client.post("/ilsi/reward", {"reward_model": name,
                                         "prompts": [item["prompt"]] * len(solutions),
                                         "solutions": solutions})
        assert r.status_code == 200, r.text
        body = r.json()
        for got, steps in zip(body["scores"], solutions, strict=True):
            want = refs[name].step_scores(item["prompt"], steps)
            assert got == pytest.approx(list(want), abs=1e-5)
        assert len(body["scores"][0]) == (1 if name == "orm" else len(solutions[0]))
    # the verifier checks the arithmetic: a wrong first result sinks every later step
    r = client.post("/ilsi/reward", {"reward_model": "verifier", "prompts": [item["prompt"]] * 2,
                                     "solutions": solutions[:2]})
    right, wrong = r.json()["scores"]
    assert min(right) > 0.2 and max(wrong) < 0.05, (right, wrong)


def test_reward_listing_and_bad_scoring_input(client):
    import requests

    listed = requests.get(client.base_url + "/ilsi/reward", timeout=30).json()["reward_models"]
    assert {(m["name"], m["kind"], m["reads"]) for m in listed} == {
        ("prm", "process", "head"), ("orm", "outcome", "head"),
        ("verifier", "process", "likelihood")}
    bad = [({"reward_model": "nope", "prompts": ["x"], "solutions": [["y"]]}, "reward_model"),
           ({"reward_model": "prm", "prompts": "x", "solutions": [["y"]]}, "prompts"),
           ({"reward_model": "prm", "prompts": ["x"], "solutions": [["y"], ["z"]]}, "solutions")]
    for body, param in bad:
        r = client.post("/ilsi/reward", body)
        assert r.status_code == 400 and param in r.text, r.text


def test_reward_model_that_does_not_load_stops_the_launch(tmp_path):
    """The local reward models load at launch (each logs its memory); truncated
    weights stop the server with a message naming the flag and the model."""
    broken = tmp_path / "orm"
    shutil.copytree(ORM, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:64])  # truncated: a failed download
    done = subprocess.run(
        [sys.executable, "-m", "sglang.launch_server", "--model-path", POLICY, "--device", "cpu",
         "--attention-backend", "torch_native", "--port", str(free_port()),
         "--ilsi", "--ilsi-reward-model", f"orm={broken}"],
        capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert "--ilsi-reward-model orm: cannot load" in done.stdout + done.stderr, (
        done.stdout + done.stderr)[-3000:]


# -- the searches ----------------------------------------------------------------------


def _replayed(client, refs, tokenizer, out: dict, prompt: str, scorer) -> None:
    """Every reported reward equals transformers' on the node's text; the reference
    replays the server's tree (each child's step text and reward from the report)
    and decides itself which nodes to grow and which leaf answers: it must agree
    with the server throughout."""
    report = out["meta_info"]["ilsi"]
    params = report["params"]
    ref = ClientSearch(client.base_url, prompt, scorer, replay=report["nodes"])
    if report["method"] == "mcts":
        chosen = mcts(ref, params["n"], params["width"], params["exploration"],
                      params["max_steps"])
    else:
        run = ref.beam_search if report["method"] == "prm_beam_search" else ref.dvts
        chosen = run(params["n"], params["beam_width"], params["max_steps"])
    assert len(ref.nodes) - 1 == len(report["nodes"])  # no node grown that it would not grow
    assert report["chosen"] == chosen.id
    assert out["text"] == "".join(chosen.steps)
    assert report["reward"] == pytest.approx(chosen.reward, abs=1e-5)
    steps: dict[int, list[str]] = {0: []}
    for got in report["nodes"]:  # every reported reward is transformers' on the same text
        steps[got["id"]] = steps[got["parent"]] + [got["step"]]
        [(want, _)] = scorer(prompt, [steps[got["id"]]])
        if math.isnan(want):
            assert got["reward"] is None
        else:
            assert got["reward"] == pytest.approx(want, abs=1e-5)
        assert got["finished"] or got["step"].endswith(report["step_delimiter"])
    assert tokenizer.decode(out["output_ids"], skip_special_tokens=True) == out["text"]
    assert out["meta_info"]["completion_tokens"] == len(out["output_ids"])
    cost = report["cost"]
    assert cost["nodes"] == len(report["nodes"])
    assert cost["policy_completion_tokens"] >= len(out["output_ids"])
    assert cost["reward_model_tokens"] > 0 and cost["generate_calls"] == cost["reward_calls"]
    assert cost["extra_forward_tokens"] == cost["policy_completion_tokens"] - len(
        out["output_ids"])


@pytest.mark.parametrize("method,item,rm", [("prm_beam_search", 0, "prm"),
                                            ("prm_beam_search", 1, "prm"),
                                            ("dvts", 2, "prm"), ("mcts", 3, "prm"),
                                            ("prm_beam_search", 4, "verifier")])
def test_search_equals_reference_replay(client, refs, tokenizer, method, item, rm):
    prompt = ITEMS[item]["prompt"]
    shape = {"n": 6, "width": 2} if method == "mcts" else {"n": 4, "beam_width": 2}
    ilsi = {"method": method, **shape, "max_steps": 5, "reward_model": rm}
    out = _run(client, prompt, ilsi, 11 + item)
    _replayed(client, refs, tokenizer, out, prompt, refs[rm].scorer())


def test_search_with_outcome_model_and_min_aggregate(client, refs, tokenizer):
    prompt = ITEMS[3]["prompt"]
    for ilsi, ref, how in (
            ({"method": "dvts", "n": 4, "beam_width": 2, "reward_model": "orm"}, "orm", "last"),
            ({"method": "prm_beam_search", "n": 4, "beam_width": 2, "reward_model": "prm",
              "aggregate": "min"}, "prm", "min")):
        out = _run(client, prompt, ilsi, 5)
        _replayed(client, refs, tokenizer, out, prompt, refs[ref].scorer(how))


def test_greedy_search_answers_like_greedy_decoding(client, tokenizer):
    prompt = ITEMS[0]["prompt"]
    plain = client.generate(prompt, MAX_NEW)
    out = client.generate(prompt, MAX_NEW, ilsi={"method": "prm_beam_search", "n": 4,
                                                 "beam_width": 2, "reward_model": "prm"})
    assert out["text"] == plain["text"] and out["output_ids"] == plain["output_ids"]
    nodes = out["meta_info"]["ilsi"]["nodes"]
    assert len({n["step"] for n in nodes if n["depth"] == 1}) == 1  # identical siblings
    # each child's input is prompt + its parent's tokens; the radix cache computes far less
    inputs = sum(len(tokenizer.encode(prompt)) + (nodes[n["parent"] - 1]["tokens"]
                                                  if n["parent"] else 0) for n in nodes)
    assert out["meta_info"]["ilsi"]["cost"]["prompt_tokens_computed"] < inputs / 2


def test_search_through_a_second_server(client, remote_client, refs, tokenizer):
    prompt = ITEMS[3]["prompt"]
    ilsi = {"method": "prm_beam_search", "n": 4, "beam_width": 2, "max_steps": 5}
    out = _run(remote_client, prompt, ilsi, 21)  # its only reward model: by URL
    _replayed(remote_client, refs, tokenizer, out, prompt, refs["prm"].scorer())
    import requests

    listed = requests.get(remote_client.base_url + "/ilsi/reward", timeout=30).json()
    assert listed["reward_models"][0]["where"] == client.base_url


def test_search_batch_isolation(client):
    """Greedy searches are deterministic: beside other searches and methods they
    grow the same tree."""
    prompt_a, prompt_b = ITEMS[4]["prompt"], ITEMS[5]["prompt"]
    beam = {"method": "prm_beam_search", "n": 4, "beam_width": 2, "reward_model": "prm"}
    dvts = {"method": "dvts", "n": 4, "beam_width": 2, "reward_model": "orm"}
    alone_search = client.generate(prompt_a, MAX_NEW, ilsi=beam)
    alone_plain = client.generate(prompt_b, MAX_NEW)
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(client.generate, prompt_a, MAX_NEW, 0.0, beam),
                pool.submit(client.generate, prompt_b, MAX_NEW),
                pool.submit(_run, client, prompt_b, dvts, 32),
                pool.submit(client.generate, prompt_a, MAX_NEW, 1.0, {"method": "typical"})]
        together = [j.result() for j in jobs]
    assert together[0]["text"] == alone_search["text"]
    assert together[0]["meta_info"]["ilsi"]["nodes"] == alone_search["meta_info"]["ilsi"]["nodes"]
    assert together[1]["text"] == alone_plain["text"]
    assert together[2]["meta_info"]["ilsi"]["method"] == "dvts"


def test_search_over_openai_completions(client):
    c = client.openai()
    r = c.completions.create(model=client.model, prompt=ITEMS[0]["prompt"], max_tokens=MAX_NEW,
                             temperature=1.0,
                             extra_body={"custom_params": {"ilsi": {
                                 "method": "dvts", "n": 2, "beam_width": 1,
                                 "reward_model": "orm"}}})
    report = r.model_extra["ilsi"]
    assert report["method"] == "dvts"
    assert r.choices[0].text
    assert r.usage.completion_tokens == report["nodes"][report["chosen"] - 1]["tokens"]


# -- selection with a reward model ------------------------------------------------------


def test_best_of_n_with_outcome_model(client, refs):
    item = ITEMS[1]
    out = _run(client, item["prompt"], {"method": "best_of_n", "n": 6, "reward": "model",
                                        "reward_model": "orm"}, 41)
    report = out["meta_info"]["ilsi"]
    rewards = [refs["orm"].reward(item["prompt"], refs["orm"].steps(c["text"]))
               for c in report["candidates"]]
    assert [c["reward"] for c in report["candidates"]] == pytest.approx(rewards, abs=1e-5)
    best = max(range(len(rewards)), key=lambda k: (rewards[k], -k))
    assert report["chosen"] == best and out["text"] == report["candidates"][best]["text"]


def test_weighted_self_consistency_with_process_model(client, refs):
    item = ITEMS[2]
    out = _run(client, item["prompt"], {"method": "weighted_self_consistency", "n": 8,
                                        "reward_model": "prm", "aggregate": "min",
                                        "extractor": "hash_marker"}, 51)
    report = out["meta_info"]["ilsi"]
    texts = [c["text"] for c in report["candidates"]]
    rewards = [refs["prm"].reward(item["prompt"], refs["prm"].steps(t), "min") for t in texts]
    assert [c["reward"] for c in report["candidates"]] == pytest.approx(rewards, abs=1e-5)
    answers = [synthetic.extract_number(t) if "####" in t else None for t in texts]
    votes: dict[float, float] = {}
    for a, r in zip(answers, rewards, strict=True):
        if a is not None:
            votes[a] = votes.get(a, 0.0) + r
    winner = max(votes, key=lambda a: votes[a])
    assert synthetic.extract_number(out["text"]) == winner
    chosen = [k for k in range(len(texts)) if answers[k] == winner]
    assert report["chosen"] == max(chosen, key=lambda k: (rewards[k], -k))


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("ilsi,param", [
    ({"method": "prm_beam_search", "reward_model": "nope"}, "reward_model"),
    ({"method": "prm_beam_search"}, "reward_model"),  # two loaded: name one
    ({"method": "prm_beam_search", "reward_model": "prm", "n": 6, "beam_width": 4},
     "beam_width"),
    ({"method": "prm_beam_search", "reward_model": "prm", "n": 65}, "n"),
    ({"method": "dvts", "reward_model": "prm", "max_steps": 0}, "max_steps"),
    ({"method": "dvts", "reward_model": "prm", "step_delimiter": "x" * 17}, "step_delimiter"),
    ({"method": "dvts", "reward_model": "prm", "aggregate": "median"}, "aggregate"),
    ({"method": "dvts", "reward_model": "prm", "decoding": {"method": "dvts"}}, "decoding"),
    ({"method": "best_of_n", "reward": "model", "reward_model": "nope"}, "reward_model"),
    ({"method": "weighted_self_consistency", "reward_model": "prm", "n": 0}, "n"),
])
def test_bad_search_requests_are_400(client, ilsi, param):
    r = client.post("/generate", {"text": ITEMS[0]["prompt"],
                                  "sampling_params": {"custom_params": {"ilsi": ilsi}}})
    assert r.status_code == 400, r.text
    assert param in r.text
    assert client.generate(ITEMS[0]["prompt"], 4)["text"]  # still serving


def test_search_refuses_logprobs(client):
    r = client.post("/generate", {"text": ITEMS[0]["prompt"], "return_logprob": True,
                                  "sampling_params": {"custom_params": {"ilsi": {
                                      "method": "dvts", "reward_model": "prm"}}}})
    assert r.status_code == 400 and "logprob" in r.text


# -- plain beam search on a model that ends its answers ---------------------------------


@pytest.mark.parametrize("beams,alpha", [(4, 1.0), (2, 0.5)])
def test_beam_search_ends_like_transformers(client, beams, alpha):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(POLICY, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(POLICY)
    for item in ITEMS[:3]:
        ids = torch.tensor([tok.encode(item["prompt"])])
        want = model.generate(ids, attention_mask=torch.ones_like(ids), num_beams=beams,
                              do_sample=False, length_penalty=alpha, max_new_tokens=MAX_NEW,
                              pad_token_id=0)[0, ids.shape[1]:].tolist()
        want = want[:want.index(0) + 1] if 0 in want else want
        out = client.generate(item["prompt"], MAX_NEW, ilsi={"method": "beam_search",
                                                             "beams": beams,
                                                             "length_penalty": alpha})
        assert out["output_ids"] == want
        assert out["output_ids"][-1] == 0 and out["meta_info"]["finish_reason"]["type"] == "stop"


# -- reward-guided decoding: ARGS, RAD, controlled decoding -------------------------------


def args_reference(tokenizer, rm: RewardReference, prompt: str, k: int, weight: float,
                   max_new: int) -> list[int]:
    """ARGS-greedy in transformers: top-k by log-probability, + w · r(prefix), argmax."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(POLICY, dtype=torch.float32).eval()
    ids, out = tokenizer.encode(prompt), []
    with torch.no_grad():
        for _ in range(max_new):
            logprobs = torch.log_softmax(model(torch.tensor([ids + out])).logits[0, -1], -1)
            top = torch.topk(logprobs, k)
            scores = []
            for lp, token in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                text = tokenizer.decode(out + [token], skip_special_tokens=True)
                r = rm.reward(prompt, rm.steps(text))
                scores.append(lp + weight * (0.0 if math.isnan(r) else r))
            out.append(top.indices.tolist()[scores.index(max(scores))])
            if out[-1] == 0:
                break
    return out


@pytest.mark.parametrize("rm,weight", [("prm", 1.5), ("orm", 5.0)])
def test_args_equals_transformers(client, refs, tokenizer, rm, weight):
    item = ITEMS[4]
    out = client.generate(item["prompt"], 24, ilsi={"method": "args", "k": 4,
                                                    "weight": weight, "reward_model": rm})
    assert out["output_ids"] == args_reference(tokenizer, refs[rm], item["prompt"], 4, weight,
                                               24)
    cost = out["meta_info"]["ilsi"]["cost"]
    assert cost["generate_calls"] == cost["reward_calls"] == len(out["output_ids"])
    # the reward model's KV cache holds the prompt and the text so far: after the
    # first step it computes only the candidate and a re-cut tail
    steps = cost["reward_calls"]
    prompt_tokens = len(refs[rm].tokenizer.encode(item["prompt"], add_special_tokens=False))
    computed = cost["reward_model_tokens"] - cost["reward_model_cached_tokens"]
    assert computed <= 4 * (prompt_tokens + 1) + 4 * 3 * (steps - 1)
    assert cost["reward_model_cached_tokens"] > computed


def test_reward_cache_is_listed_with_its_memory(client):
    import requests

    client.generate(ITEMS[3]["prompt"], 4, ilsi={"method": "rad", "k": 2,
                                                 "reward_model": "orm"})
    listed = {m["name"]: m for m in requests.get(client.base_url + "/ilsi/reward",
                                                 timeout=30).json()["reward_models"]}
    cache = listed["orm"]["kv_cache"]
    # lab-orm: 4 layers x 4 KV heads x 36 dims x keys and values x 4 bytes
    assert cache["bytes_per_token"] == 4 * 4 * 36 * 2 * 4
    assert cache["capacity_tokens"] == 16384
    assert cache["capacity_bytes"] == 16384 * cache["bytes_per_token"]
    assert 0 < cache["tokens_in_use"] <= cache["capacity_tokens"] and cache["hits"] > 0


def test_rad_argmax_is_args_and_seeded_draws_repeat(client):
    prompt = ITEMS[5]["prompt"]
    args = client.generate(prompt, 24, ilsi={"method": "args", "k": 4, "weight": 3.0,
                                             "reward_model": "prm"})
    rad = client.generate(prompt, 24, ilsi={"method": "rad", "k": 4, "beta": 3.0, "tau": 0.0,
                                            "reward_model": "prm"})
    assert rad["output_ids"] == args["output_ids"]
    drawn = [client.generate(prompt, 24, ilsi={"method": "rad", "k": 4, "beta": 3.0,
                                               "seed": 7, "reward_model": "prm"})
             for _ in range(2)]
    assert drawn[0]["output_ids"] == drawn[1]["output_ids"]


def test_controlled_decoding_keeps_the_best_block(client, refs):
    item = ITEMS[0]
    out = _run(client, item["prompt"], {"method": "controlled_decoding", "k": 3, "block": 6,
                                        "reward_model": "orm"}, 3)
    report = out["meta_info"]["ilsi"]
    nodes = {n["id"]: n for n in report["nodes"]}
    path = report["chosen_path"]
    assert "".join(nodes[i]["step"] for i in path) == out["text"]
    texts: dict[int, str] = {0: ""}
    for n in report["nodes"]:
        texts[n["id"]] = texts[n["parent"]] + n["step"]
        want = refs["orm"].reward(item["prompt"], refs["orm"].steps(texts[n["id"]]))
        assert n["reward"] == pytest.approx(want, abs=1e-5)
    for depth, chosen in enumerate(path, start=1):  # the kept block is its round's best
        siblings = [n for n in report["nodes"] if n["depth"] == depth]
        assert len(siblings) == 3
        assert max(s["reward"] for s in siblings) == nodes[chosen]["reward"]
        assert min(s["id"] for s in siblings if s["reward"] == nodes[chosen]["reward"]) == chosen


def test_tree_of_thoughts_program_keeps_the_best_valued_states(client, refs):
    """The tree-of-thoughts frontend program (``sgl.fork``): every state's value is
    the PRM's on its thoughts (transformers), each level grows exactly the states
    a breadth-first replay of the reported values keeps, and the appended text is
    the best kept state's."""
    import sglang as sgl

    from sglang_ilsi.lang import tree_of_thoughts

    breadth, proposals, depth = 2, 2, 4

    @sgl.function
    def solve(s, question):
        s += question
        tree_of_thoughts(s, "answer", reward_model="prm", breadth=breadth, proposals=proposals,
                         depth=depth, step_max_tokens=16, temperature=1.0)

    item = ITEMS[1]
    state = solve.run(question=item["prompt"], backend=sgl.RuntimeEndpoint(client.base_url))
    report, text = state["answer_ilsi"], state["answer"]
    states = {x["id"]: x for x in report["states"]}

    def thoughts(state_id: int) -> list[str]:
        out = []
        while state_id != -1:
            out.append(states[state_id]["thought"])
            state_id = states[state_id]["parent"]
        return out[::-1]

    for x in report["states"]:
        steps = thoughts(x["id"])
        assert x["value"] == pytest.approx(
            min(refs["prm"].step_scores(item["prompt"], steps)), abs=1e-5)
        assert x["finished"] == (not x["thought"].endswith("\n"))
    kept = [{"id": -1, "finished": False, "value": math.nan}]
    for level in range(1, depth + 1):
        children = [x for x in report["states"] if x["level"] == level]
        growing = [x["id"] for x in kept if not x["finished"]]
        if not growing:
            assert not children
            break
        assert [x["parent"] for x in children] == [p for p in growing for _ in range(proposals)]
        pool = [x for x in kept if x["finished"]] + children
        kept = sorted(pool, key=lambda x: -x["value"])[:breadth]  # stable: ties keep order
    assert report["kept"] == [x["id"] for x in kept]
    best = max(kept, key=lambda x: x["value"])
    assert report["chosen"] == best["id"] and text == "".join(thoughts(best["id"]))
    assert state.text() == item["prompt"] + text
