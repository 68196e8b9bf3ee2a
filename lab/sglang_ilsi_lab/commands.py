"""The ``sglang-ilsi`` subcommands the offline lab adds (entry-point group
``sglang_ilsi.commands``): ``demo``, ``tiny-model``, ``models``,
``self-spec-search`` and ``bench``. Each is an object with ``help``,
``add_arguments(parser)`` and ``run(namespace, argv) -> int``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, list[str]], int]
    description: str | None = None


def _models_list(as_json: bool) -> int:
    from sglang_ilsi_lab.models import catalog

    infos = [entry.info() for entry in catalog.CATALOG.values()]
    if as_json:
        print(json.dumps(infos, indent=2))
        return 0
    for info in infos:
        source = ", ".join(f"{p['package']}=={p['version']}" for p in info["packages"])
        if info["prepared"]:
            state = "prepared"
        elif info["missing"]:
            state = "not prepared; missing: " + "; ".join(info["missing"])
        else:
            state = "not prepared"
        print(f"{info['name']}  [{source or 'built by sglang-ilsi'}]  {state}")
        print(f"    {info['description']}")
        print(f"    licence: {info['licence']}")
        if info["sha256"]:
            print(f"    sha256: {info['sha256']}")
        print(f"    path: {info['path']}")
        if info.get("base"):
            agreement = info.get("greedy_token_agreement")
            print(f"    derived from {info['base']}; greedy token agreement with it: "
                  + (f"{agreement:.3f}" if agreement is not None else "measured when prepared"))
    return 0


def _models_prepare(name: str) -> int:
    from sglang_ilsi_lab.models import catalog

    try:
        path = catalog.prepare(name)
    except catalog.UnknownModelError as exc:
        print(f"sglang-ilsi: error: {exc}", file=sys.stderr)
        return 2
    except catalog.ModelError as exc:
        print(f"sglang-ilsi: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0




CALIBRATION_PROMPTS = (
    "What is the capital of France?", "Write a Python function for Fibonacci numbers.",
    "Tell me a short story about a cat.", "Explain photosynthesis in two sentences.",
    "List three uses of copper.", "Why is the sky blue?",
    "Q: 23+45-12=?\nA:", "Extract JSON: Alice is a 34-year-old teacher from Paris.\nJSON:",
)


def _self_spec_search(ns: argparse.Namespace) -> int:
    from sglang_ilsi_lab.models import skip_search

    if ns.prompts_file is not None:
        with open(ns.prompts_file, encoding="utf-8") as f:
            prompts = [line.rstrip("\n").replace("\\n", "\n") for line in f if line.strip()]
    else:
        prompts = list(CALIBRATION_PROMPTS)
    if ns.steps < 1 or ns.max_new_tokens < 1:
        print("sglang-ilsi: --steps and --max-new-tokens must be at least 1", file=sys.stderr)
        return 2
    try:
        report = skip_search.search(ns.model_path, prompts, steps=ns.steps,
                                    max_new_tokens=ns.max_new_tokens, max_skip=ns.max_skip)
    except (OSError, ValueError) as exc:
        print(f"sglang-ilsi: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="a name from `sglang-ilsi models list` (default: %(default)s)")
    p.add_argument("--model-path", default=None, help="or any model folder")
    p.add_argument("--max-new-tokens", type=int, default=24)


def _demo(ns: argparse.Namespace, argv: list[str]) -> int:
    from sglang_ilsi_lab import demo as demo_module

    return demo_module.run(model=ns.model, model_path=ns.model_path,
                           max_new_tokens=ns.max_new_tokens)


def _tiny_model(ns: argparse.Namespace, argv: list[str]) -> int:
    from sglang_ilsi_lab.models import tiny

    print(tiny.ensure())
    return 0


def _models_arguments(p: argparse.ArgumentParser) -> None:
    models_sub = p.add_subparsers(dest="models_command", required=True)
    p_list = models_sub.add_parser("list", help="catalog models, whether prepared, and where")
    p_list.add_argument("--json", action="store_true", help="machine-readable output")
    p_prepare = models_sub.add_parser(
        "prepare", help="convert a catalog model (from its installed package) and print its folder")
    p_prepare.add_argument("name", help="catalog model name (see 'models list')")


def _models(ns: argparse.Namespace, argv: list[str]) -> int:
    if ns.models_command == "list":
        return _models_list(ns.json)
    return _models_prepare(ns.name)


def _skip_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-path", required=True, help="the target model folder")
    p.add_argument("--prompts-file", default=None,
                   help="calibration prompts, one per line (default: a built-in set)")
    p.add_argument("--steps", type=int, default=3, help="draft tokens per step (gamma)")
    p.add_argument("--max-new-tokens", type=int, default=32,
                   help="length of each calibration continuation")
    p.add_argument("--max-skip", type=int, default=None, help="largest set to try")


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    from sglang_ilsi_lab.bench import cli as bench_cli

    bench_cli.add_arguments(p)


def _bench(ns: argparse.Namespace, argv: list[str]) -> int:
    from sglang_ilsi_lab.bench import cli as bench_cli

    return bench_cli.run(ns, argv)


def _bench_description() -> str:
    from sglang_ilsi_lab.bench import cli as bench_cli

    return bench_cli.DESCRIPTION


demo = Command("serve the embedded model and compare methods", _demo_arguments, _demo)
tiny_model = Command("print the path of the embedded tiny model (builds it)",
                     lambda p: None, _tiny_model)
models = Command("list or prepare the model catalog", _models_arguments, _models)
self_spec_search = Command(
    "choose the layers SELF_SPECULATIVE's draft skips (greedy search on calibration "
    "prompts, scored by the expected speed-up)", _skip_arguments,
    lambda ns, argv: _self_spec_search(ns))
bench = Command("measure methods' effect and cost (grid, resumable)", _bench_arguments, _bench,
                description=_bench_description())
