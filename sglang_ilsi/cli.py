"""``sglang-ilsi``: the command line.

- ``sglang-ilsi serve ARGS``: ``python -m sglang.launch_server --ilsi ARGS``;
- ``sglang-ilsi methods [--json]``: the method catalog;
- ``sglang-ilsi flags``: the ``--ilsi*`` launch flags;
- ``sglang-ilsi demo``: the README's main job (see :mod:`sglang_ilsi.demo`);
- ``sglang-ilsi tiny-model``: build (or find) the embedded test model.
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
    cards = [registry.describe(cls) for cls in registry.all_methods().values()]
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
    p_demo.add_argument("--model-path", default=None, help="model folder (default: embedded)")
    p_demo.add_argument("--max-new-tokens", type=int, default=24)
    sub.add_parser("tiny-model", help="print the path of the embedded tiny model (builds it)")
    ns = parser.parse_args(argv)

    if ns.command == "methods":
        return _methods(ns.json)
    if ns.command == "flags":
        from sglang_ilsi.config import flag_help

        print(flag_help())
        return 0
    if ns.command == "demo":
        from sglang_ilsi import demo

        return demo.run(model_path=ns.model_path, max_new_tokens=ns.max_new_tokens)
    if ns.command == "tiny-model":
        from sglang_ilsi.models import tiny

        print(tiny.ensure())
        return 0
    parser.error(f"unknown command {ns.command}")  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
