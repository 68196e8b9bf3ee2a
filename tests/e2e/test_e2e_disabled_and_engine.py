"""End-to-end: the plugin installed but not enabled behaves like stock
SGLang; and the offline ``sglang.Engine`` with ``SGLANG_ILSI=1``.

Stock SGLang cannot start on a CPU-only machine (its kernel wheel is
CUDA-only), so the disabled-plugin server gets our ``sgl_kernel`` stand-in
the way a user of stock SGLang would have to: by hand, on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import start_server
from reference_decoding import HFReference

from sglang_ilsi.engine.cpu.portability import SHIM_DIR

pytestmark = pytest.mark.server

PROMPT = "def hello(world):"


@pytest.fixture(scope="module")
def stock(tiny_model_path):
    env = {"PYTHONPATH": SHIM_DIR, "SGLANG_USE_CPU_ENGINE": "1", "SGLANG_ILSI": "0"}
    yield from start_server(tiny_model_path, None, ["--enable-custom-logit-processor"], env)


def test_disabled_plugin_leaves_requests_alone(stock, tiny_model_path):
    hf = HFReference(tiny_model_path)
    plain = hf.greedy(hf.encode(PROMPT), 16, None)
    out = stock.generate(PROMPT, max_new_tokens=16,
                         ilsi={"method": "penalty_decoding", "penalty": 3.0, "window": 8})
    assert out["output_ids"] == plain  # the ilsi object is just an unused custom param
    assert "ilsi" not in out["meta_info"]
    # not even validated: stock SGLang ignores custom_params it has no processor for
    out = stock.generate(PROMPT, max_new_tokens=4, ilsi={"method": "no-such-method"})
    assert "ilsi" not in out["meta_info"]


def test_disabled_plugin_keeps_stock_custom_processors(stock, tiny_model_path):
    from sglang.srt.sampling.custom_logit_processor import DisallowedTokensLogitsProcessor

    hf = HFReference(tiny_model_path)
    banned = hf.greedy(hf.encode(PROMPT), 4, None)
    r = stock.post("/generate", {
        "text": PROMPT, "custom_logit_processor": DisallowedTokensLogitsProcessor.to_str(),
        "sampling_params": {"max_new_tokens": 8, "temperature": 0,
                            "custom_params": {"token_ids": banned}}})
    assert r.status_code == 200, r.text
    assert not set(r.json()["output_ids"]) & set(banned)
    # no plugin: a model-name suffix means nothing and no report is added
    resp = stock.openai().completions.create(model=stock.model + "+typical", prompt="x",
                                             max_tokens=2)
    assert "ilsi" not in (resp.model_extra or {})


ENGINE_SCRIPT = textwrap.dedent("""
    import json, sys
    import sglang as sgl

    if __name__ == "__main__":
        engine = sgl.Engine(model_path=sys.argv[1], device="cpu", dtype="float32",
                            attention_backend="torch_native", max_total_tokens=4096,
                            skip_server_warmup=True, sleep_on_idle=True, log_level="error")
        try:
            out = engine.generate("def hello(world):", {
                "max_new_tokens": 20, "temperature": 0,
                "custom_params": {"ilsi": {"method": "penalty_decoding", "penalty": 3.0,
                                           "window": 8}}})
            plain = engine.generate("def hello(world):", {"max_new_tokens": 20, "temperature": 0})
            try:
                engine.generate("x", {"max_new_tokens": 2,
                                      "custom_params": {"ilsi": {"method": "typical", "mass": 9}}})
                error = None
            except ValueError as e:
                error = str(e)
            chosen = engine.generate("def hello(world):", {
                "max_new_tokens": 3, "temperature": 1.0,
                "custom_params": {"ilsi": {"method": "mbr", "n": 4}}})
            print("RESULT " + json.dumps({"out": out, "plain": plain, "error": error,
                                          "selection": chosen}))
        finally:
            engine.shutdown()
""")


def test_offline_engine_with_environment_switch(tiny_model_path, tmp_path):
    """``SGLANG_ILSI=1`` enables the plugin for ``sglang.Engine``, CPU included,
    with no PYTHONPATH change by the user."""
    from reference_decoding import make_transform

    from sglang_ilsi import registry
    from sglang_ilsi.params import validate_params

    script = tmp_path / "engine_run.py"
    script.write_text(ENGINE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_ILSI")}
    env.update({"SGLANG_ILSI": "1",
                "SGLANG_ILSI_ARGS": "--ilsi-methods typical,penalty_decoding,mbr"})
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, str(script), tiny_model_path], env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    hf = HFReference(tiny_model_path)
    full = validate_params(registry.get("penalty_decoding").params, {"penalty": 3.0, "window": 8})
    expected = hf.greedy(hf.encode(PROMPT), 20,
                         make_transform("penalty_decoding", full, hf.eos_ids))
    assert result["out"]["output_ids"] == expected
    assert result["out"]["meta_info"]["ilsi"]["method"] == "penalty_decoding"
    assert result["plain"]["output_ids"] == hf.greedy(hf.encode(PROMPT), 20, None)
    assert "ilsi.mass" in result["error"]
    report = result["selection"]["meta_info"]["ilsi"]
    assert report["method"] == "mbr" and len(report["candidates"]) == 4
    assert result["selection"]["text"] == report["candidates"][report["chosen"]]["text"]
