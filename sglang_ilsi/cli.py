"""``sglang-ilsi``: the command line.

- ``sglang-ilsi serve ARGS``: ``python -m sglang.launch_server --ilsi ARGS``;
- ``sglang-ilsi methods [--json]``: the method catalog;
- ``sglang-ilsi flags``: the ``--ilsi*`` launch flags;
- ``sglang-ilsi grammars [--json]``: the grammars library (``"ilsi": {"grammar": NAME}``).

With the offline lab installed (``sglang-ilsi-lab``, in ``lab/``), also:

- ``sglang-ilsi demo``: the README's main job;
- ``sglang-ilsi tiny-model``: build (or find) the embedded test model;
- ``sglang-ilsi models list|prepare``: the model catalog;
- ``sglang-ilsi self-spec-search``: choose SELF_SPECULATIVE's skipped layers;
- ``sglang-ilsi bench [--quick | --evidence] ...``: effect and cost of methods.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sglang_ilsi import registry


def _serve(args: list[str]) -> int:
    argv = [sys.executable, "-m", "sglang.launch_server", *args]
    if "--ilsi" not in args:
        argv.append("--ilsi")
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


def _methods(as_json: bool) -> int:
    cards = [registry.describe(cls) for cls in registry.entries().values()]
    if as_json:
        print(json.dumps(cards, indent=2))
        return 0
    for card in cards:
        print(f"{card['name']}  [{card['kind']}, {card['family']}]  "
              f"needs: {', '.join(card['needs'])}")
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


# Subcommands other distributions add (the offline lab: demo, bench, models, ...).
# Each entry point is an object with ``help``, ``add_arguments(parser)`` and
# ``run(namespace, argv) -> int`` (and optionally ``description``).
COMMANDS_ENTRY_POINT_GROUP = "sglang_ilsi.commands"
LAB_COMMANDS = ("demo", "tiny-model", "models", "self-spec-search", "bench")


def lab_commands() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep.load() for ep in entry_points(group=COMMANDS_ENTRY_POINT_GROUP)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = lab_commands()
    if argv and argv[0] in LAB_COMMANDS and argv[0] not in commands:
        print(f"sglang-ilsi: '{argv[0]}' belongs to the offline lab, which is not installed: "
              "pip install sglang-ilsi-lab (from this repository: pip install -e lab)",
              file=sys.stderr)
        return 2
    if argv and argv[0] == "serve":  # everything after 'serve' goes to SGLang
        return _serve(argv[1:])
    parser = argparse.ArgumentParser(prog="sglang-ilsi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start SGLang with the plugin enabled (args go to SGLang)")
    p_methods = sub.add_parser("methods", help="list the method catalog")
    p_methods.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("flags", help="describe the --ilsi* launch flags")
    p_grammars = sub.add_parser("grammars", help="list the grammars library")
    p_grammars.add_argument("--json", action="store_true", help="machine-readable output")
    for name, command in commands.items():
        command.add_arguments(sub.add_parser(
            name, help=command.help, description=getattr(command, "description", None),
            formatter_class=argparse.RawDescriptionHelpFormatter))
    ns = parser.parse_args(argv)

    if ns.command == "methods":
        return _methods(ns.json)
    if ns.command == "grammars":
        return _grammars(ns.json)
    if ns.command == "flags":
        from sglang_ilsi.config import flag_help

        print(flag_help())
        return 0
    if ns.command in commands:
        return commands[ns.command].run(ns, argv[1:])
    parser.error(f"unknown command {ns.command}")  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
