"""Launch configuration: ``--ilsi*`` flags and environment → one frozen object.

The launcher process parses the ``--ilsi*`` flags out of ``sys.argv`` (SGLang's
own parser would reject them), validates them, and exports the result as JSON
in ``SGLANG_ILSI_CONFIG``; every process SGLang spawns inherits it. The
offline ``sglang.Engine`` has no argv of ours, so there ``SGLANG_ILSI=1`` (and
optionally ``SGLANG_ILSI_ARGS="--ilsi-methods typical,eta ..."``) enables the
plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from sglang_ilsi.errors import ENV_ARGS, ENV_CONFIG, ENV_ENABLE, IlsiConfigError
from sglang_ilsi.reward_cache import DEFAULT_CAPACITY_TOKENS
from sglang_ilsi.tools import flags as tool_flags

FLAG_PREFIX = "--ilsi"


@dataclass(frozen=True)
class IlsiConfig:
    """Everything the plugin needs to know, identical in every process."""

    # Methods requests may select; empty tuple = every registered method.
    methods: tuple[str, ...] = ()
    default_method: str | None = None
    default_params: dict[str, Any] = field(default_factory=dict)
    # Tools and monitors (sglang_ilsi.tools.flags).
    tools: tuple[str, ...] = ()
    tool_retrieval_dir: str | None = None
    tool_max_calls: int = 8
    monitor_modules: tuple[str, ...] = ()
    # Keep SGLang's dill-based custom_logit_processor path open (unsafe: it
    # executes code sent by clients). Off unless the operator opts in.
    allow_custom_logit_processor: bool = False
    plugin_files: tuple[str, ...] = ()
    trace_max_k: int = 20
    # Set from SGLang's own flags, for request-time refusals.
    speculative_algorithm: str | None = None
    # SGLang's --grammar-backend when given on the command line (outlines gets
    # cached masks: engine/scheduler/outlines_masks.py).
    grammar_backend: str | None = None
    # Co-resident auxiliary models (amateur, expert, anti-expert): name → path.
    aux_models: dict[str, str] = field(default_factory=dict)
    # kNN-LM datastores (sglang_ilsi/datastore.py): name → path, checked at launch.
    datastores: dict[str, str] = field(default_factory=dict)
    # Reward models (sglang_ilsi/reward.py): served here (name → folder) or by a
    # second sglang-ilsi server (name → its URL).
    reward_models: dict[str, str] = field(default_factory=dict)
    reward_urls: dict[str, str] = field(default_factory=dict)
    # Tokens of KV cache each local reward model keeps (sglang_ilsi/reward_cache.py).
    reward_cache_tokens: int = DEFAULT_CAPACITY_TOKENS
    # Layers the SELF_SPECULATIVE draft skips; empty = the default rule.
    self_spec_skip: tuple[int, ...] = ()
    # LOOKAHEAD's window (W, N); empty = the default shape.
    lookahead: tuple[int, ...] = ()
    # REST's draft text: a datastore's corpus.jsonl (None: not a REST server)
    rest_corpus: str | None = None
    # SPECULATIVE_CONTRASTIVE's plausibility threshold and contrast weight
    # (None = the defaults of engine/speculative/contrastive.py).
    scd_alpha: float | None = None
    scd_beta: float | None = None
    # Start even when SGLang's version or a touch point does not match what the
    # plugin was checked against (engine/patches.py); a warning instead of a refusal.
    allow_unsupported_sglang: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> IlsiConfig:
        data = json.loads(text)
        data["methods"] = tuple(data.get("methods", ()))
        data["tools"] = tuple(data.get("tools", ()))
        data["monitor_modules"] = tuple(data.get("monitor_modules", ()))
        data["plugin_files"] = tuple(data.get("plugin_files", ()))
        data["aux_models"] = dict(data.get("aux_models", {}))
        data["datastores"] = dict(data.get("datastores", {}))
        data["reward_models"] = dict(data.get("reward_models", {}))
        data["reward_urls"] = dict(data.get("reward_urls", {}))
        data["self_spec_skip"] = tuple(data.get("self_spec_skip", ()))
        data["lookahead"] = tuple(data.get("lookahead", ()))
        return cls(**data)

    def method_allowed(self, name: str) -> bool:
        return not self.methods or name in self.methods


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit(2)
        raise IlsiConfigError(message)


def _parser() -> _Parser:
    p = _Parser(prog="sglang-ilsi flags", add_help=False, allow_abbrev=False)
    p.add_argument("--ilsi", action="store_true", help="enable the sglang-ilsi plugin")
    p.add_argument(
        "--ilsi-methods",
        default="all",
        help="comma-separated methods requests may select, or 'all' (default)",
    )
    p.add_argument(
        "--ilsi-default-method",
        default=None,
        help="method applied to requests that name none ('none' = plain decoding)",
    )
    p.add_argument(
        "--ilsi-default-params",
        default=None,
        help="JSON object of parameters for --ilsi-default-method",
    )
    p.add_argument(
        "--ilsi-allow-custom-logit-processor",
        action="store_true",
        help="UNSAFE: keep SGLang's dill-serialized custom_logit_processor requests "
        "(they run client-sent code in the server)",
    )
    p.add_argument(
        "--ilsi-allow-unsupported-sglang",
        action="store_true",
        help="start even when the installed SGLang is outside the supported version range "
        "or one of the plugin's SGLang touch points no longer matches (logged as a warning; "
        "a hook that cannot be applied still stops the launch)",
    )
    p.add_argument(
        "--ilsi-plugin",
        action="append",
        default=[],
        help="Python file registering out-of-tree methods (repeatable)",
    )
    p.add_argument(
        "--ilsi-aux-model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="load a co-resident auxiliary model (same tokenizer as the target) under "
        "NAME, for amateur/expert methods such as contrastive_decoding (repeatable)",
    )
    p.add_argument(
        "--ilsi-datastore",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="load a datastore built by `sglang-ilsi datastore build` for this model under "
        "NAME, for retrieval methods such as knn_lm (repeatable)",
    )
    p.add_argument(
        "--ilsi-reward-model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve an outcome or process reward model (an HF *ForSequenceClassification / "
        "*ForTokenClassification folder with sglang_ilsi_reward.json) beside the policy under "
        "NAME, for best_of_n, weighted_self_consistency and the reward-guided searches "
        "(repeatable)",
    )
    p.add_argument(
        "--ilsi-reward-url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="use the reward model NAME served by a second sglang-ilsi server at URL (one "
        "started with --ilsi-reward-model NAME=PATH), for reward models too big to co-host "
        "(repeatable)",
    )
    p.add_argument(
        "--ilsi-reward-cache-tokens",
        type=int,
        default=DEFAULT_CAPACITY_TOKENS,
        metavar="N",
        help="tokens of KV cache each --ilsi-reward-model keeps of the prefixes it has read "
        f"(least recently used evicted; 0: off; default {DEFAULT_CAPACITY_TOKENS})",
    )
    p.add_argument(
        "--ilsi-self-spec-skip",
        default=None,
        metavar="L1,L2,...",
        help="decoder layers the draft skips under --speculative-algorithm SELF_SPECULATIVE "
        "(default: every other layer, first and last kept)",
    )
    p.add_argument(
        "--ilsi-rest-datastore",
        default=None,
        metavar="PATH",
        help="under --speculative-algorithm REST: the datastore (built by `sglang-ilsi "
        "datastore build`) whose text the drafts are retrieved from",
    )
    p.add_argument(
        "--ilsi-lookahead",
        default=None,
        metavar="W,N",
        help="window columns and n-gram size under --speculative-algorithm LOOKAHEAD "
        "(default 4,3)",
    )
    p.add_argument(
        "--ilsi-scd-alpha",
        type=float,
        default=None,
        help="plausibility threshold alpha under --speculative-algorithm "
        "SPECULATIVE_CONTRASTIVE (default 0.1)",
    )
    p.add_argument(
        "--ilsi-scd-beta",
        type=float,
        default=None,
        help="contrast weight beta under --speculative-algorithm SPECULATIVE_CONTRASTIVE "
        "(default 0.5)",
    )
    p.add_argument(
        "--ilsi-trace-max-k",
        type=int,
        default=20,
        help="largest top-k a request may ask for in its per-token trace",
    )
    tool_flags.add_arguments(p)
    return p


def flag_help() -> str:
    return _parser().format_help()


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate our ``--ilsi*`` flags (with their values) from SGLang's."""
    ours: list[str] = []
    rest: list[str] = []
    takes_value = {
        "--ilsi-methods",
        "--ilsi-default-method",
        "--ilsi-default-params",
        "--ilsi-plugin",
        "--ilsi-trace-max-k",
        "--ilsi-aux-model",
        "--ilsi-datastore",
        "--ilsi-reward-model",
        "--ilsi-reward-url",
        "--ilsi-reward-cache-tokens",
        "--ilsi-self-spec-skip",
        "--ilsi-lookahead",
        "--ilsi-rest-datastore",
        "--ilsi-scd-alpha",
        "--ilsi-scd-beta",
    }
    takes_value |= tool_flags.TAKES_VALUE
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == FLAG_PREFIX or arg.startswith(FLAG_PREFIX + "-"):
            ours.append(arg)
            if arg in takes_value and i + 1 < len(argv):
                ours.append(argv[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return ours, rest


def _sglang_flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def parallel_ranks(sglang_argv: list[str]) -> int:
    """How many scheduler ranks SGLang starts for these flags: TP × DP × PP."""
    ranks = 1
    for names in (("--tp-size", "--tensor-parallel-size", "--tp"),
                  ("--dp-size", "--data-parallel-size", "--dp"),
                  ("--pp-size", "--pipeline-parallel-size")):
        for name in names:
            value = _sglang_flag(sglang_argv, name)
            if value is not None:
                try:
                    ranks *= max(1, int(value))
                except ValueError:
                    pass  # SGLang's own parser names the bad value
                break
    return ranks


def parse(ours: list[str], sglang_argv: list[str] | None = None) -> IlsiConfig:
    """Parse and validate our flags. Raises :class:`IlsiConfigError`."""
    from sglang_ilsi import registry  # late: registry imports torch

    ns = _parser().parse_args(ours)
    for path in ns.ilsi_plugin:
        try:
            registry.load_plugin_file(path)
        except FileNotFoundError as e:
            raise IlsiConfigError(str(e)) from None
    known = registry.entries()

    if ns.ilsi_methods.strip() in ("", "all"):
        methods: tuple[str, ...] = ()
    else:
        methods = tuple(m.strip() for m in ns.ilsi_methods.split(",") if m.strip())
        unknown = [m for m in methods if m not in known]
        if unknown:
            raise IlsiConfigError(
                f"--ilsi-methods: unknown method(s) {unknown}; known: {sorted(known)}"
            )

    default = ns.ilsi_default_method
    if default == "none":
        default = None
    default_params: dict[str, Any] = {}
    if default is not None:
        if default not in known:
            raise IlsiConfigError(
                f"--ilsi-default-method: unknown method {default!r}; known: {sorted(known)}"
            )
        if default not in registry.logits_methods():
            from sglang_ilsi.declaration import kind_of

            raise IlsiConfigError(
                f"--ilsi-default-method {default!r} is a {kind_of(known[default])} method; "
                f"the server default must be a logits-stage method"
            )
        if methods and default not in methods:
            raise IlsiConfigError(
                f"--ilsi-default-method {default!r} is not among --ilsi-methods {list(methods)}"
            )
    if ns.ilsi_default_params is not None:
        if default is None:
            raise IlsiConfigError("--ilsi-default-params needs --ilsi-default-method")
        try:
            default_params = json.loads(ns.ilsi_default_params)
        except json.JSONDecodeError as e:
            raise IlsiConfigError(f"--ilsi-default-params: not valid JSON ({e})") from None
        if not isinstance(default_params, dict):
            raise IlsiConfigError("--ilsi-default-params: expected a JSON object")
    if default is not None:
        from sglang_ilsi.params import IlsiRequestError, validate_params

        try:
            default_params = validate_params(known[default].params, default_params)
        except IlsiRequestError as e:
            raise IlsiConfigError(f"--ilsi-default-params: {e}") from None
    if not 0 <= ns.ilsi_trace_max_k <= 1000:
        raise IlsiConfigError("--ilsi-trace-max-k: must be between 0 and 1000")

    spec = _sglang_flag(sglang_argv or [], "--speculative-algorithm")
    if spec and default is not None and "logits" in known[default].needs:
        raise IlsiConfigError(
            f"--ilsi-default-method {default!r} runs in the logits stage, which SGLang skips "
            f"under --speculative-algorithm {spec}; drop one of the two"
        )
    if "--speculative-use-rejection-sampling" in (sglang_argv or []):
        import torch

        if not torch.cuda.is_available():
            raise IlsiConfigError(
                "--speculative-use-rejection-sampling needs SGLang's Triton kernels, which do "
                "not run on this machine (no CUDA); without it, sampled requests are verified "
                "by target-only speculative sampling, which is exact as well")
    aux_models = _aux_models(ns.ilsi_aux_model, _sglang_flag(sglang_argv or [], "--model-path"))
    if aux_models:
        # Under --tp-size an aux model is sharded with the target's TP group, and
        # each --dp-size replica loads its own; pipeline stages would each need
        # the aux model's matching layers, which nothing here splits.
        for flag in ("--pp-size", "--pipeline-parallel-size"):
            value = _sglang_flag(sglang_argv or [], flag)
            if value is not None and value.strip() != "1":
                raise IlsiConfigError(
                    f"--ilsi-aux-model runs whole auxiliary models on each rank; it cannot be "
                    f"combined with {flag} {value}")
    datastores = _datastores(ns.ilsi_datastore, _sglang_flag(sglang_argv or [], "--model-path"))
    reward_models, reward_urls = _reward_models(ns.ilsi_reward_model, ns.ilsi_reward_url)
    self_spec_skip = _self_spec_skip(ns.ilsi_self_spec_skip, spec,
                                     _sglang_flag(sglang_argv or [], "--model-path"))
    lookahead = _lookahead(ns.ilsi_lookahead, spec,
                           _sglang_flag(sglang_argv or [], "--speculative-num-draft-tokens"))
    _speculative_contrastive(ns, spec, sglang_argv or [])
    rest_corpus = _rest_corpus(ns.ilsi_rest_datastore, spec)
    return IlsiConfig(
        methods=methods,
        default_method=default,
        default_params=default_params,
        allow_custom_logit_processor=ns.ilsi_allow_custom_logit_processor,
        plugin_files=tuple(os.path.abspath(p) for p in ns.ilsi_plugin),
        trace_max_k=ns.ilsi_trace_max_k,
        speculative_algorithm=spec.upper() if spec else None,
        grammar_backend=_sglang_flag(sglang_argv or [], "--grammar-backend"),
        **tool_flags.parse(ns),
        aux_models=aux_models,
        datastores=datastores,
        reward_models=reward_models,
        reward_urls=reward_urls,
        reward_cache_tokens=_reward_cache_tokens(ns.ilsi_reward_cache_tokens),
        self_spec_skip=self_spec_skip,
        lookahead=lookahead,
        rest_corpus=rest_corpus,
        scd_alpha=ns.ilsi_scd_alpha,
        scd_beta=ns.ilsi_scd_beta,
        allow_unsupported_sglang=ns.ilsi_allow_unsupported_sglang,
    )


def _speculative_contrastive(ns: argparse.Namespace, spec: str | None,
                             sglang_argv: list[str]) -> None:
    """``--ilsi-scd-*`` and SGLang's flags under ``SPECULATIVE_CONTRASTIVE``."""
    from sglang_ilsi.methods.speculative.speculative_contrastive import SpeculativeContrastive

    algorithm = SpeculativeContrastive.algorithm
    chosen = (spec or "").upper() == algorithm
    for flag, value in (("--ilsi-scd-alpha", ns.ilsi_scd_alpha),
                        ("--ilsi-scd-beta", ns.ilsi_scd_beta)):
        if value is not None and not chosen:
            raise IlsiConfigError(f"{flag} needs --speculative-algorithm {algorithm}")
    if ns.ilsi_scd_alpha is not None and not 0.0 < ns.ilsi_scd_alpha <= 1.0:
        raise IlsiConfigError("--ilsi-scd-alpha: must be in (0, 1]")
    if ns.ilsi_scd_beta is not None and not 0.0 <= ns.ilsi_scd_beta <= 10.0:
        raise IlsiConfigError("--ilsi-scd-beta: must be between 0 and 10")
    if not chosen:
        return
    if _sglang_flag(sglang_argv, "--speculative-draft-model-path") is None:
        raise IlsiConfigError(f"--speculative-algorithm {algorithm} needs the amateur as "
                              "--speculative-draft-model-path")
    topk = _sglang_flag(sglang_argv, "--speculative-eagle-topk")
    if topk is not None and topk.strip() != "1":
        raise IlsiConfigError(f"--speculative-algorithm {algorithm} verifies a chain of "
                              f"drafts: --speculative-eagle-topk must be 1, not {topk}")


def _lookahead(value: str | None, spec: str | None,
               draft_tokens: str | None) -> tuple[int, ...]:
    """``--ilsi-lookahead W,N`` → ``(W, N)``, checked against the draft-token budget."""
    from sglang_ilsi.methods.speculative import lookahead

    algorithm = lookahead.LookaheadDecoding.algorithm
    is_lookahead = (spec or "").upper() == algorithm
    if value is not None and not is_lookahead:
        raise IlsiConfigError(f"--ilsi-lookahead needs --speculative-algorithm {algorithm}")
    if not is_lookahead:
        return ()
    try:
        shape = lookahead.parse_shape(value) if value is not None else lookahead.WindowShape()
        if draft_tokens is not None and draft_tokens.strip().isdigit():
            lookahead.pool_size(int(draft_tokens), shape)
    except ValueError as e:
        raise IlsiConfigError(f"--ilsi-lookahead: {e}") from None
    return (shape.window, shape.ngram) if value is not None else ()


def _rest_corpus(store: str | None, spec: str | None) -> str | None:
    """``--ilsi-rest-datastore`` → the store's ``corpus.jsonl`` (checked whole);
    REST needs it, and it needs REST."""
    from sglang_ilsi.datastore import DatastoreError, rest_corpus
    from sglang_ilsi.methods.speculative.rest import RetrievalSpeculative

    algorithm = RetrievalSpeculative.algorithm
    is_rest = (spec or "").upper() == algorithm
    if store is None:
        if is_rest:
            raise IlsiConfigError(f"--speculative-algorithm {algorithm} needs "
                                  "--ilsi-rest-datastore PATH (a store built by `sglang-ilsi "
                                  "datastore build`)")
        return None
    if not is_rest:
        raise IlsiConfigError(f"--ilsi-rest-datastore needs --speculative-algorithm {algorithm}")
    try:
        return rest_corpus(store)
    except DatastoreError as e:
        raise IlsiConfigError(f"--ilsi-rest-datastore: {e}") from None


def sglang_argv(config: IlsiConfig | None, argv: list[str]) -> list[str]:
    """SGLang's own flags for this launch. A REST server runs SGLang's NGRAM worker
    on the store's text (``methods/speculative/rest.py``): ``--speculative-algorithm
    REST`` becomes ``NGRAM`` with ``--speculative-ngram-external-corpus-path`` and,
    unless the operator set it, half the draft tokens from the corpus."""
    if config is None or config.rest_corpus is None:
        return argv
    from sglang_ilsi.methods.speculative.rest import NGRAM_DEFAULT_DRAFT_TOKENS

    out: list[str] = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] == "--speculative-algorithm":
            arg = "NGRAM"
        elif arg.startswith("--speculative-algorithm="):
            arg = "--speculative-algorithm=NGRAM"
        out.append(arg)
    out += ["--speculative-ngram-external-corpus-path", config.rest_corpus]
    if _sglang_flag(argv, "--speculative-ngram-external-sam-budget") is None:
        drafts = _sglang_flag(argv, "--speculative-num-draft-tokens")
        total = int(drafts) if drafts and drafts.isdigit() else NGRAM_DEFAULT_DRAFT_TOKENS
        out += ["--speculative-ngram-external-sam-budget", str(max(1, (total - 1) // 2))]
    return out


def _self_spec_skip(value: str | None, spec: str | None,
                    target_path: str | None) -> tuple[int, ...]:
    """``--ilsi-self-spec-skip`` → layer ids, checked against the target's layer count."""
    from sglang_ilsi.methods.speculative import self_speculative

    algorithm = self_speculative.SelfSpeculative.algorithm

    if value is None:
        return ()
    if (spec or "").upper() != algorithm:
        raise IlsiConfigError(
            f"--ilsi-self-spec-skip needs --speculative-algorithm {algorithm}")
    try:
        layers = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise IlsiConfigError(
            f"--ilsi-self-spec-skip: expected comma-separated layer numbers, got {value!r}"
        ) from None
    count = None
    if target_path is not None and os.path.isfile(os.path.join(target_path, "config.json")):
        count = self_speculative.num_layers(target_path)
    try:
        return self_speculative.check_skip(layers, count if count is not None else max(layers, default=0) + 2)
    except ValueError as e:
        raise IlsiConfigError(f"--ilsi-self-spec-skip: {e}") from None


_AUX_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def _named_folders(flag: str, what: str, specs: list[str]) -> dict[str, str]:
    """``NAME=PATH`` values of ``flag`` → ``{name: path}``: well-formed, each name
    once, each path an existing folder."""
    named: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise IlsiConfigError(f"{flag}: expected NAME=PATH, got {spec!r}")
        if not _AUX_NAME.match(name):
            raise IlsiConfigError(
                f"{flag}: bad name {name!r} (letters, digits, '_' and '-', "
                "starting with a letter)"
            )
        if name in named:
            raise IlsiConfigError(f"{flag}: name {name!r} given twice")
        if not os.path.isdir(path):
            raise IlsiConfigError(f"{flag} {name}: no {what} folder at {path!r}")
        named[name] = path
    return named


def _aux_models(specs: list[str], target_path: str | None) -> dict[str, str]:
    """``NAME=PATH`` flags → ``{name: absolute path}``, each checked to share
    the target's vocabulary (:func:`sglang_ilsi.vocab.check_same_vocab`)."""
    from sglang_ilsi.vocab import VocabMismatch, check_same_vocab

    models = _named_folders("--ilsi-aux-model", "model", specs)
    for name, path in models.items():
        if target_path is not None and os.path.isdir(target_path):
            try:
                check_same_vocab(target_path, path)
            except VocabMismatch as e:
                raise IlsiConfigError(f"--ilsi-aux-model {name}: {e}") from None
    return {name: os.path.abspath(path) for name, path in models.items()}


def _datastores(specs: list[str], target_path: str | None) -> dict[str, str]:
    """``NAME=PATH`` flags → ``{name: absolute path}``, each store checked whole
    (checksums) and built for the target model and tokenizer."""
    from sglang_ilsi.datastore import DatastoreError, verify

    stores = _named_folders("--ilsi-datastore", "datastore", specs)
    for name, path in stores.items():
        try:
            verify(path, target_path if target_path and os.path.isdir(target_path) else None)
        except DatastoreError as e:
            raise IlsiConfigError(f"--ilsi-datastore {name}: {e}") from None
    return {name: os.path.abspath(path) for name, path in stores.items()}


def _reward_cache_tokens(value: int) -> int:
    """``--ilsi-reward-cache-tokens``: 0 (off) up to 2**22."""
    if not 0 <= value <= 2**22:
        raise IlsiConfigError(f"--ilsi-reward-cache-tokens: expected 0 to {2**22}, got {value}")
    return value


def _reward_models(local: list[str], remote: list[str]
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """``--ilsi-reward-model`` folders (each checked: sglang_ilsi/reward.py's format)
    and ``--ilsi-reward-url`` servers (each asked whether it serves that model)."""
    from sglang_ilsi.reward import RewardModelError, read_info, remote_info

    models = _named_folders("--ilsi-reward-model", "reward model", local)
    for name, path in models.items():
        try:
            read_info(name, path)
        except RewardModelError as e:
            raise IlsiConfigError(f"--ilsi-reward-model {name}: {e}") from None
    urls: dict[str, str] = {}
    for spec in remote:
        name, sep, url = spec.partition("=")
        if not sep or not _AUX_NAME.match(name) or not url.startswith(("http://", "https://")):
            raise IlsiConfigError(f"--ilsi-reward-url: expected NAME=http://HOST:PORT, got {spec!r}")
        if name in models or name in urls:
            raise IlsiConfigError(f"--ilsi-reward-url: name {name!r} given twice")
        try:
            remote_info(name, url)
        except RewardModelError as e:
            raise IlsiConfigError(f"--ilsi-reward-url {name}: {e}") from None
        urls[name] = url.rstrip("/")
    return {name: os.path.abspath(path) for name, path in models.items()}, urls


def from_environment(argv: list[str]) -> tuple[IlsiConfig | None, list[str]]:
    """Resolve the config of this process.

    Returns ``(config or None if disabled, argv without our flags)``. A child
    process finds the launcher's config in ``SGLANG_ILSI_CONFIG``.
    """
    exported = os.environ.get(ENV_CONFIG)
    ours, rest = split_argv(argv)
    if exported:
        return IlsiConfig.from_json(exported), rest
    if ours:
        return parse(ours, rest), rest
    if os.environ.get(ENV_ENABLE, "").lower() in ("1", "true", "yes", "on"):
        extra = shlex.split(os.environ.get(ENV_ARGS, ""))
        bad = [a for a in extra if a.startswith("-") and not a.startswith(FLAG_PREFIX)]
        if bad:
            raise IlsiConfigError(f"{ENV_ARGS}: only --ilsi-* flags belong here, got {bad}")
        return parse(extra, rest), rest
    return None, rest
