"""``sglang-ilsi``: the command line.

- ``sglang-ilsi serve ARGS``: ``python -m sglang.launch_server --ilsi ARGS``;
- ``sglang-ilsi methods [--json]``: the method catalog;
- ``sglang-ilsi flags``: the ``--ilsi*`` launch flags;
- ``sglang-ilsi demo``: the README's main job (see :mod:`sglang_ilsi.demo`);
- ``sglang-ilsi tiny-model``: build (or find) the embedded test model;
- ``sglang-ilsi models list [--json]``: the model catalog, prepared or not;
- ``sglang-ilsi models prepare NAME``: convert a catalog model, print its folder;
- ``sglang-ilsi grammars [--json]``: the grammars library (``"ilsi": {"grammar": NAME}``);
- ``sglang-ilsi bench [--quick | --evidence] ...``: effect and cost of methods
  (see :mod:`sglang_ilsi.bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from sglang_ilsi import registry


def _serve(args: list[str]) -> int:
    argv = [sys.executable, "-m", "sglang.launch_server", *args]
    if "--ilsi" not in args:
        argv.append("--ilsi")
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


def _methods(as_json: bool) -> int:
    cards = [registry.describe(cls) for cls in registry.catalog().values()]
    if as_json:
        print(json.dumps(cards, indent=2))
        return 0
    for card in cards:
        print(f"{card['name']}  [{card['family']}]  needs: {', '.join(card['needs'])}")
        print(f"    {card['summary']}")
        print(f"    paper: {card['paper']}")
        for p in card["params"]:
            bounds = []
            for key, op in (("minimum", ">="), ("exclusive_minimum", ">"),
                            ("maximum", "<="), ("exclusive_maximum", "<")):
                if key in p:
                    bounds.append(f"{op}{p[key]:g}")
            if "choices" in p:
                bounds.append(f"one of {p['choices']}")
            extra = f" ({', '.join(bounds)})" if bounds else ""
            print(f"    - {p['name']}: {p['type']} = {p['default']!r}{extra}  {p['doc']}")
        print()
    return 0


def _models_list(as_json: bool) -> int:
    from sglang_ilsi.models import catalog

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
    from sglang_ilsi.models import catalog

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


def _grammars(as_json: bool) -> int:
    from sglang_ilsi import grammars

    cards = grammars.describe()
    if as_json:
        print(json.dumps(cards, indent=2))
        return 0
    for card in cards:
        print(f"{card['name']}  [{card['kind']}]  backends: {', '.join(card['backends'])}")
        print(f"    {card['description']}")
        example = card["example"]
        if "\n" in example:  # multi-line examples are shown as a JSON string
            example = json.dumps(example)
        print(f"    example: {example}")
        if card["takes_schema"]:
            print("    takes a request-time schema: \"ilsi\": {\"grammar\": "
                  f"\"{card['name']}\", \"schema\": {{...}}}}")
        if card["notes"]:
            print(f"    notes: {card['notes']}")
        print()
    return 0


CALIBRATION_PROMPTS = (
    "What is the capital of France?", "Write a Python function for Fibonacci numbers.",
    "Tell me a short story about a cat.", "Explain photosynthesis in two sentences.",
    "List three uses of copper.", "Why is the sky blue?",
    "Q: 23+45-12=?\nA:", "Extract JSON: Alice is a 34-year-old teacher from Paris.\nJSON:",
)


def _self_spec_search(ns: argparse.Namespace) -> int:
    import json

    from sglang_ilsi.models import skip_search

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":  # everything after 'serve' goes to SGLang
        return _serve(argv[1:])
    parser = argparse.ArgumentParser(prog="sglang-ilsi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start SGLang with the plugin enabled (args go to SGLang)")
    p_methods = sub.add_parser("methods", help="list the method catalog")
    p_methods.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("flags", help="describe the --ilsi* launch flags")
    p_demo = sub.add_parser("demo", help="serve the embedded model and compare methods")
    p_demo.add_argument("--model", default="smollm2-135m-instruct",
                        help="a name from `sglang-ilsi models list` (default: %(default)s)")
    p_demo.add_argument("--model-path", default=None, help="or any model folder")
    p_demo.add_argument("--max-new-tokens", type=int, default=24)
    sub.add_parser("tiny-model", help="print the path of the embedded tiny model (builds it)")
    p_models = sub.add_parser("models", help="list or prepare the model catalog")
    models_sub = p_models.add_subparsers(dest="models_command", required=True)
    p_list = models_sub.add_parser("list", help="catalog models, whether prepared, and where")
    p_list.add_argument("--json", action="store_true", help="machine-readable output")
    p_prepare = models_sub.add_parser(
        "prepare", help="convert a catalog model (from its installed package) and print its folder")
    p_prepare.add_argument("name", help="catalog model name (see 'models list')")
    p_skip = sub.add_parser(
        "self-spec-search", help="choose the layers SELF_SPECULATIVE's draft skips (greedy "
        "search on calibration prompts, scored by the expected speed-up)")
    p_skip.add_argument("--model-path", required=True, help="the target model folder")
    p_skip.add_argument("--prompts-file", default=None,
                        help="calibration prompts, one per line (default: a built-in set)")
    p_skip.add_argument("--steps", type=int, default=3, help="draft tokens per step (gamma)")
    p_skip.add_argument("--max-new-tokens", type=int, default=32,
                        help="length of each calibration continuation")
    p_skip.add_argument("--max-skip", type=int, default=None, help="largest set to try")
    p_grammars = sub.add_parser("grammars", help="list the grammars library")
    p_grammars.add_argument("--json", action="store_true", help="machine-readable output")
    from sglang_ilsi.bench import cli as bench_cli

    p_bench = sub.add_parser("bench", help="measure methods' effect and cost (grid, resumable)",
                             description=bench_cli.DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_cli.add_arguments(p_bench)
    ns = parser.parse_args(argv)

    if ns.command == "methods":
        return _methods(ns.json)
    if ns.command == "grammars":
        return _grammars(ns.json)
    if ns.command == "flags":
        from sglang_ilsi.config import flag_help

        print(flag_help())
        return 0
    if ns.command == "demo":
        from sglang_ilsi import demo

        return demo.run(model=ns.model, model_path=ns.model_path,
                        max_new_tokens=ns.max_new_tokens)
    if ns.command == "tiny-model":
        from sglang_ilsi.models import tiny

        print(tiny.ensure())
        return 0
    if ns.command == "bench":
        return bench_cli.run(ns, argv[1:])
    if ns.command == "self-spec-search":
        return _self_spec_search(ns)
    if ns.command == "models":
        if ns.models_command == "list":
            return _models_list(ns.json)
        return _models_prepare(ns.name)
    parser.error(f"unknown command {ns.command}")  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
