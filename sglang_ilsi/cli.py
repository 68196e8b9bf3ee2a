"""``sglang-ilsi``: the command line.

- ``sglang-ilsi serve ARGS``: ``python -m sglang.launch_server --ilsi ARGS``;
- ``sglang-ilsi methods [NAME] [--json]``: the catalog (every name a request or a
  launch flag may use), or one entry with an example request;
- ``sglang-ilsi flags``: the ``--ilsi*`` launch flags;
- ``sglang-ilsi grammars [--json]``: the grammars library (``"ilsi": {"grammar": NAME}``);
- ``sglang-ilsi datastore build|info``: a kNN-LM datastore on disk (``--ilsi-datastore``).

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


def _serve(args: list[str]) -> int:
    argv = [sys.executable, "-m", "sglang.launch_server", *args]
    if "--ilsi" not in args:
        argv.append("--ilsi")
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


def _methods(name: str | None, as_json: bool) -> int:
    from sglang_ilsi import catalog

    if name is not None:
        try:
            card = catalog.find(name)
        except KeyError as e:
            print(f"sglang-ilsi methods: {e.args[0]}", file=sys.stderr)
            return 2
        print(json.dumps(card, indent=2) if as_json else "\n".join(method_page(card)))
        return 0
    cards = catalog.catalog()
    if as_json:
        print(json.dumps(cards, indent=2))
        return 0
    kind = None
    for card in cards:
        if card["kind"] != kind:
            kind = card["kind"]
            print(f"== {kind} ==\n")
        print(f"{card['name']}  [{card['kind']}, {card['family']}]  "
              f"needs: {', '.join(card['needs'])}")
        print(f"    {card['summary']}")
        print(f"    paper: {card['paper']}")
        for p in card["params"]:
            print(f"    - {_param_line(p)}")
        print()
    print("One entry in full, with an example request: sglang-ilsi methods NAME")
    return 0


def _param_line(p: dict[str, Any]) -> str:
    bounds = []
    for key, op in (("minimum", ">="), ("exclusive_minimum", ">"),
                    ("maximum", "<="), ("exclusive_maximum", "<")):
        if key in p:
            bounds.append(f"{op}{p[key]:g}")
    if "choices" in p:
        bounds.append(f"one of {p['choices']}")
    extra = f" ({', '.join(bounds)})" if bounds else ""
    return f"{p['name']}: {p['type']} = {p['default']!r}{extra}  {p['doc']}"


def method_page(card: dict[str, Any]) -> list[str]:
    """One catalog card as a page: what it is, its parameters, how to choose it,
    what it composes with and refuses, and an example request."""
    lines = [f"{card['name']}  [{card['kind']}, {card['family']}]", "", card["doc"], "",
             f"paper: {card['paper']}", f"needs: {', '.join(card['needs']) or 'nothing'}", ""]
    if card["params"]:
        lines += ["parameters:", *(f"  - {_param_line(p)}" for p in card["params"]), ""]
    lines += ["chosen by:", *(f"  {how}: {value}" for how, value in card["chosen_by"].items())]
    lines += ["", f"composes with: {', '.join(card['composes_with']) or 'nothing'}"]
    if card["refuses"]:
        lines += ["refuses:", *(f"  - {r['with']}: {r['why']}" for r in card["refuses"])]
    return lines + ["", *_example_lines(card)]


def _example_lines(card: dict[str, Any]) -> list[str]:
    if card["request"] is None:
        how = card["chosen_by"]
        if "server_flag" in how:
            return ["example (a launch):",
                    f"  python -m sglang.launch_server --model-path MODEL --ilsi {how['server_flag']}"]
        return [f"example: run it from an SGLang frontend program ({how.get('frontend', '?')})"]
    ilsi = json.dumps(card["request"])
    body = json.dumps({"text": "Hello", "sampling_params": {
        "max_new_tokens": 32, "custom_params": {"ilsi": card["request"]}}})
    lines = ["example request (/generate):",
             f"  curl -s localhost:30000/generate -H 'Content-Type: application/json' "
             f"-d '{body}'", "",
             "example request (OpenAI Python client):",
             '  client.chat.completions.create(model=MODEL, messages=[{"role": "user", '
             '"content": "Hello"}],',
             f'      extra_body={{"custom_params": {{"ilsi": {ilsi}}}}})']
    if "openai_tools" in card:
        lines += ["", "or with OpenAI tools (the server runs the calls):",
                  '  client.chat.completions.create(model=MODEL, messages=[...],',
                  f"      tools={json.dumps(card['openai_tools'])})"]
    return lines


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


def _datastore_arguments(parser: argparse.ArgumentParser) -> None:
    from sglang_ilsi.datastore import INDEX_KINDS, BuildOptions

    d = BuildOptions()
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build a store from a folder of text and a model "
                       "(resumable: rerun the same command to continue)")
    b.add_argument("corpus", help="folder of .txt, .md, .py and .jsonl files (JSONL: 'text')")
    b.add_argument("--model", required=True, help="the model folder the server will load")
    b.add_argument("--out", required=True, help="the store's folder (written atomically)")
    b.add_argument("--layer", type=int, default=None,
                   help="hidden state used as key: L < layers is the residual stream after L "
                   "layers; default the final hidden state (after the final norm)")
    _index_arguments(b, d, INDEX_KINDS)
    b.add_argument("--window", type=int, default=d.window, help="tokens per forward")
    b.add_argument("--stride", type=int, default=d.stride,
                   help="new keys per further window of a long document")
    b.add_argument("--max-entries", type=int, default=None, help="stop after this many keys")
    b.add_argument("--force", action="store_true", help="replace an existing store")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    r = sub.add_parser("reindex", help="copy a store with another faiss index over the same "
                       "keys (no forward pass; the source must be flat or ivf)")
    r.add_argument("source", help="a flat or ivf store")
    r.add_argument("--out", required=True, help="the new store's folder (written atomically)")
    _index_arguments(r, d, INDEX_KINDS)
    r.add_argument("--force", action="store_true", help="replace an existing store")
    i = sub.add_parser("info", help="size, entries, model, layer and index of a store")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="the store's meta.json")
    i.add_argument("--model", default=None, help="also check that the store fits this model")


def _index_arguments(parser: argparse.ArgumentParser, d: Any, kinds: tuple[str, ...]) -> None:
    parser.add_argument("--index", choices=kinds, default=d.index,
                        help="flat: exact search (small stores); ivf (exact keys), ivfsq8 "
                        "(8-bit keys, 4x smaller) / ivfpq (product-quantized): approximate, "
                        "for large stores, with the recall measured at build time (see "
                        "`datastore info`)")
    parser.add_argument("--nlist", type=int, default=d.nlist, help="IVF cells")
    parser.add_argument("--nprobe", type=int, default=d.nprobe,
                        help="IVF cells searched per query")
    parser.add_argument("--pq-m", type=int, default=d.pq_m, help="IVF-PQ sub-quantizers")


def _datastore(ns: argparse.Namespace) -> int:
    from sglang_ilsi import datastore

    try:
        if ns.action == "build":
            options = datastore.BuildOptions(
                layer=ns.layer, index=ns.index, nlist=ns.nlist, nprobe=ns.nprobe,
                pq_m=ns.pq_m, window=ns.window, stride=ns.stride, max_entries=ns.max_entries)
            meta = datastore.build(ns.corpus, ns.model, ns.out, options, quiet=ns.quiet,
                                   force=ns.force)
            print("\n".join(datastore.describe(meta, ns.out)))
            return 0
        if ns.action == "reindex":
            options = datastore.BuildOptions(index=ns.index, nlist=ns.nlist, nprobe=ns.nprobe,
                                             pq_m=ns.pq_m)
            meta = datastore.reindex(ns.source, ns.out, options, force=ns.force)
            print("\n".join(datastore.describe(meta, ns.out)))
            return 0
        meta = datastore.verify(ns.path, ns.model)
    except datastore.DatastoreError as e:
        print(f"sglang-ilsi datastore: {e}", file=sys.stderr)
        return 2
    print(json.dumps(meta, indent=2) if ns.json else "\n".join(datastore.describe(meta, ns.path)))
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
    p_methods = sub.add_parser("methods", help="the catalog: every method, selection rule, "
                               "program, speculative algorithm, tool and grammar")
    p_methods.add_argument("name", nargs="?", help="one entry in full, with an example request")
    p_methods.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("flags", help="describe the --ilsi* launch flags")
    p_grammars = sub.add_parser("grammars", help="list the grammars library")
    p_grammars.add_argument("--json", action="store_true", help="machine-readable output")
    _datastore_arguments(sub.add_parser(
        "datastore", help="build or describe a kNN-LM datastore (--ilsi-datastore NAME=PATH)"))
    for name, command in commands.items():
        command.add_arguments(sub.add_parser(
            name, help=command.help, description=getattr(command, "description", None),
            formatter_class=argparse.RawDescriptionHelpFormatter))
    ns = parser.parse_args(argv)

    if ns.command == "methods":
        return _methods(ns.name, ns.json)
    if ns.command == "grammars":
        return _grammars(ns.json)
    if ns.command == "datastore":
        return _datastore(ns)
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
