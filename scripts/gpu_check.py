"""The GPU check: the logits methods and stage on CUDA, on a machine that has
PyTorch and nothing else of ours installed (run it with ``scripts/gpu_check.sh``,
which puts the repository on ``PYTHONPATH``).

1. **equality** — every registered logits method, through the logits stage, on the
   same synthetic batch (8 rows, mixed temperatures, grammar-style ``-inf`` masks,
   vocabulary 32k) on CUDA and on the CPU, over three steps with the same sampled
   tokens: the kept sets must be identical and the kept values close, and so the
   methods' stats.
2. **stage cost** — host µs per step of the stage (the kept layouts and parameter
   tensors, and the stage rebuilt at every step as before issue #17), and µs until
   the device finished, at batch 64 and 256 × vocabulary 128k: for a probe (the
   stage's own bookkeeping) and every method.
3. **device path** — what each method's step reads back from the device (each read
   is a host-device sync on a GPU) and how many operators it dispatches (≈ kernel
   launches) at each batch size: the stage run on PyTorch's ``meta`` device, where
   any read raises. Runs on any machine; listed, not failed.
4. **server** (only where SGLang imports) — a server on the GPU with
   ``--attention-backend torch_native`` serving one method of three families.

Without CUDA it says ``no CUDA: CPU fallback``, runs each method through the stage
on the CPU (a smoke check: the same code paths as part 1 save the device) and the
probe's cost, and exits 0. Prints one JSON object (also to ``--out``); exits 1
if a check failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "lab"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from sglang_ilsi.engine.scheduler import logits_stage  # noqa: E402
from sglang_ilsi.engine.scheduler import stage_timing as st  # noqa: E402
from sglang_ilsi.methods.common import flush_stats  # noqa: E402

EQUAL_ROWS, EQUAL_VOCAB, EQUAL_STEPS = 8, 32768, 3
RTOL, ATOL = 1e-4, 1e-4
SERVER_METHODS = (  # one method of three families
    ("typical", {"mass": 0.9}),
    ("penalty_decoding", {}),
    ("dola", {}),
)


# -- 1. equality --------------------------------------------------------------------


def _stats(batch: st.SyntheticBatch) -> list[dict[str, float]]:
    flush_stats()
    out = []
    for params in batch.params_list:
        state = logits_stage.state_of(params, create=False)
        out.append({} if state is None else dict(state.summary["stats"]))
    return out


def _differences(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """How ``b`` (moved to the CPU) differs from ``a``: rows whose kept sets differ,
    and the largest difference of the kept values."""
    b = b.float().cpu()
    a = a.float()
    kept_a, kept_b = ~torch.isneginf(a), ~torch.isneginf(b)
    rows = (kept_a != kept_b).any(dim=-1).nonzero().flatten().tolist()
    both = kept_a & kept_b
    diff = (a[both] - b[both]).abs()
    close = bool(torch.allclose(a[both], b[both], rtol=RTOL, atol=ATOL)) if both.any() else True
    return {"kept_set_rows_differ": rows, "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
            "close": close}


def _stats_close(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    if [sorted(x) for x in a] != [sorted(y) for y in b]:
        return False
    return all(abs(x[k] - y[k]) <= 1e-3 * max(1.0, abs(x[k])) for x, y in zip(a, b) for k in x)


def compare_method(name: str, device: str, rows: int = EQUAL_ROWS, vocab: int = EQUAL_VOCAB,
                   steps: int = EQUAL_STEPS) -> dict[str, Any]:
    """``name`` through the stage on ``device`` and on the CPU, same inputs and tokens."""
    cpu = st.make_batch(name, rows, vocab, "cpu", mask_every=3)
    dev = st.make_batch(name, rows, vocab, device, mask_every=3)
    report: dict[str, Any] = {"ok": True}
    for step in range(steps):
        a = logits_stage.apply_methods(cpu.logits, list(cpu.params_list))
        b = logits_stage.apply_methods(dev.logits, list(dev.params_list))
        d = _differences(a, b)
        if d["kept_set_rows_differ"] or not d["close"]:
            report.update(ok=False, step=step, **d)
            return report
        report["max_abs_diff"] = max(report.get("max_abs_diff", 0.0), d["max_abs_diff"])
        tokens = a.argmax(dim=-1)
        every = range(rows)
        logits_stage.record_tokens(cpu.params_list, every, tokens)
        logits_stage.record_tokens(dev.params_list, every, tokens.to(device))
    if not _stats_close(_stats(cpu), _stats(dev)):
        report.update(ok=False, stats_cpu=_stats(cpu), stats_device=_stats(dev))
    return report


def smoke_method(name: str, rows: int = 4, vocab: int = 4096) -> dict[str, Any]:
    """``name`` through the stage on the CPU: finite where not removed, never all removed,
    grammar-masked entries kept out."""
    batch = st.make_batch(name, rows, vocab, "cpu", mask_every=3)
    masked = torch.isneginf(batch.logits)
    for _ in range(2):
        out = logits_stage.apply_methods(batch.logits, list(batch.params_list))
        ok = (not torch.isnan(out).any() and not torch.isposinf(out).any()
              and bool(torch.isfinite(out).any(dim=-1).all())
              and bool(torch.isneginf(out[masked]).all()))
        if not ok:
            return {"ok": False}
        logits_stage.record_tokens(batch.params_list, range(rows), out.argmax(dim=-1))
    return {"ok": True}


def equality(device: str | None, methods: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in methods:
        try:
            results[name] = compare_method(name, device) if device else smoke_method(name)
        except Exception as e:  # noqa: BLE001 - reported, the check goes on
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    return results


# -- 2. stage cost --------------------------------------------------------------------


def stage_cost(device: str, methods: list[str], batches: list[int], vocab: int,
               steps: int) -> dict[str, Any]:
    """Host µs per step (kept vs rebuilt) and µs with the device's work, per batch."""
    out: dict[str, Any] = {}
    for name in ["probe", *methods]:
        method = st.StageProbe if name == "probe" else name
        out[name] = {}
        for b in batches:
            try:
                kept = st.time_stage(st.make_batch(method, b, vocab, device), steps=steps,
                                     warmup=2, record=True)
                rebuilt = st.time_stage(st.make_batch(method, b, vocab, device), steps=steps,
                                        warmup=2, record=True, apply=st.apply_rebuilt)
            except Exception as e:  # noqa: BLE001
                out[name][str(b)] = {"error": f"{type(e).__name__}: {e}"[:300]}
                continue
            figure = {"host_us": kept["median_us"], "host_us_rebuilt": rebuilt["median_us"],
                      "with_device_us": kept["with_device_us"]}
            if name == "probe":
                figure["target_us"] = 150 + 2 * b
            out[name][str(b)] = figure
    return out


# -- 3. server ------------------------------------------------------------------------


def _plugin_path() -> str | None:
    """A folder that makes our SGLang plugin's entry point visible to a server started
    without installing the package (None where it is installed)."""
    found = importlib.metadata.entry_points(group="sglang.srt.plugins")
    if any(ep.value.startswith("sglang_ilsi") for ep in found):
        return None
    folder = Path(tempfile.mkdtemp(prefix="ilsi-plugin-"))
    info = folder / "sglang_ilsi-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sglang-ilsi\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(
        "[sglang.srt.plugins]\nilsi = sglang_ilsi.plugin:register\n")
    return str(folder)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def server(model_path: str | None) -> dict[str, Any]:
    """Three method families served by SGLang on the GPU (skipped without SGLang)."""
    if importlib.util.find_spec("sglang") is None:
        return {"skipped": "SGLang is not importable here"}
    try:
        from sglang_ilsi_lab.server_process import ServerProcess
        if model_path is None:
            from sglang_ilsi_lab.models import tiny
            model_path = str(tiny.ensure())
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"no model: {type(e).__name__}: {e}"[:300]}
    extra = _plugin_path()
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in (extra, str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    results: dict[str, Any] = {"model": model_path}
    start = time.perf_counter()
    try:
        with ServerProcess(model_path, ["--ilsi"], ["--attention-backend", "torch_native",
                                                    "--dtype", "float32"],
                           extra_env=env) as proc:
            for name, params in SERVER_METHODS:
                meta = _post(proc.base_url, {
                    "text": "def fibonacci(n):",
                    "sampling_params": {"max_new_tokens": 8, "temperature": 0.0,
                                        "custom_params": {"ilsi": {"method": name, **params}}},
                })["meta_info"]
                report = meta.get("ilsi") or {}
                results[name] = {"ok": report.get("method") == name,
                                 "tokens": meta.get("completion_tokens")}
    except Exception as e:  # noqa: BLE001
        results["error"] = f"{type(e).__name__}: {e}"[:1000]
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


# -- main -----------------------------------------------------------------------------


def _failed(report: dict[str, Any]) -> bool:
    bad = [n for n, r in report.get("equality", {}).items() if not r.get("ok")]
    srv = report.get("server", {})
    bad += [n for n, r in srv.items() if isinstance(r, dict) and not r.get("ok", True)]
    return bool(bad) or "error" in srv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="all", help="comma-separated logits methods")
    ap.add_argument("--batches", default="64,256", help="stage cost: batch sizes")
    ap.add_argument("--vocab", type=int, default=131072, help="stage cost: vocabulary")
    ap.add_argument("--steps", type=int, default=20, help="stage cost: timed steps")
    ap.add_argument("--model-path", default=None, help="server: model (default: tiny)")
    ap.add_argument("--no-server", action="store_true", help="skip the server part")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    methods = st.logits_method_names() if args.methods == "all" else args.methods.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "result": "cuda" if cuda else "no CUDA: CPU fallback",
    }
    print(f"gpu_check: {report['result']} (torch {torch.__version__})", file=sys.stderr)
    report["equality"] = equality("cuda" if cuda else None, methods)
    report["device_path"] = {name: {"reads": st.device_read(name),
                                    "ops_per_step": {str(b): st.device_ops(name, b)
                                                     for b in batches}}
                             for name in methods}
    if cuda:
        report["stage_cost"] = stage_cost("cuda", methods, batches, args.vocab, args.steps)
        report["server"] = {"skipped": "--no-server"} if args.no_server else server(
            args.model_path)
    else:
        report["stage_cost"] = stage_cost("cpu", [], batches, args.vocab, args.steps)
        report["server"] = {"skipped": "no CUDA"}
    report["ok"] = not _failed(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
