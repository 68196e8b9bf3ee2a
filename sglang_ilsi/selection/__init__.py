"""One call, N samples, one answer: the SGLang-free half of sample-and-select.

The engine forks N continuations of a request, wraps each as a
:class:`Candidate` (text, token ids, cumulative logprob, finish reason, and a
reward where the rule needs one) and calls the chosen rule::

    from sglang_ilsi.selection import Candidate, get_rule

    rule = get_rule("self_consistency")        # IlsiRequestError("method") if unknown
    params = rule.validate(request_params)      # IlsiRequestError naming the parameter
    n = params["n"]                             # how many continuations to fork
    ...
    selection = rule.select(candidates, params) # -> Selection
    selection.index, selection.to_dict()

ESC samples incrementally: after each completed window, call
``should_stop([extract(text) for text in texts_so_far], params["window"])`` with
``make_extractor(params["extractor"], params["pattern"], params["field"])``.
Rules needing ``"reward"`` (``best_of_n``) expect ``Candidate.reward`` filled in.

Rules: ``self_consistency``, ``esc``, ``mbr``, ``mbr_model``, ``mbr_pruned``,
``mbr_diverse``, ``best_of_n``. Extractors: :mod:`.extractors`; MBR utilities:
:mod:`.utilities`.
"""

from sglang_ilsi.selection import rules as _rules  # noqa: F401  (registers the rules)
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.extractors import (
    DEFAULT_EXTRACTOR,
    EXTRACTORS,
    extract_answers,
    extractor_from_params,
    make_extractor,
)
from sglang_ilsi.selection.registry import RULES, all_rules, describe_rule, get_rule
from sglang_ilsi.selection.rules import (
    BestOfN,
    DiverseMBR,
    EarlyStoppingSelfConsistency,
    MinimumBayesRisk,
    ModelBasedMBR,
    PrunedMBR,
    SelectionRule,
    SelfConsistency,
    majority_vote,
    should_stop,
)
from sglang_ilsi.selection.utilities import (
    DEFAULT_UTILITY,
    UTILITIES,
    MissingDependencyError,
    utility_matrix,
)


def validate_rule_params(name: str, given: dict | None = None) -> dict:
    """``get_rule(name).validate(given)``: the validated parameters of rule ``name``."""
    return get_rule(name).validate(given)


__all__ = [
    "DEFAULT_EXTRACTOR",
    "DEFAULT_UTILITY",
    "EXTRACTORS",
    "RULES",
    "UTILITIES",
    "BestOfN",
    "Candidate",
    "DiverseMBR",
    "EarlyStoppingSelfConsistency",
    "MinimumBayesRisk",
    "MissingDependencyError",
    "ModelBasedMBR",
    "PrunedMBR",
    "Selection",
    "SelectionRule",
    "SelfConsistency",
    "all_rules",
    "describe_rule",
    "extract_answers",
    "extractor_from_params",
    "get_rule",
    "majority_vote",
    "make_extractor",
    "should_stop",
    "utility_matrix",
    "validate_rule_params",
]
