"""The machinery selection rules share (SGLang-free): candidates, answer
extractors and MBR utilities.

The rules themselves are registered methods of kind ``selection``, one file each
under :mod:`sglang_ilsi.methods.selection`; look one up with
:func:`sglang_ilsi.registry.get_rule`::

    from sglang_ilsi import registry
    from sglang_ilsi.selection import Candidate

    rule = registry.get_rule("self_consistency")  # IlsiRequestError("method") if unknown
    params = rule.validate(request_params)         # IlsiRequestError naming the parameter
    selection = rule.select(candidates, params)    # -> Selection
"""

from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.extractors import (
    DEFAULT_EXTRACTOR,
    EXTRACTORS,
    extract_answers,
    extractor_from_params,
    make_extractor,
)
from sglang_ilsi.selection.utilities import (
    DEFAULT_UTILITY,
    UTILITIES,
    MissingDependencyError,
    utility_matrix,
)

__all__ = [
    "DEFAULT_EXTRACTOR",
    "DEFAULT_UTILITY",
    "EXTRACTORS",
    "UTILITIES",
    "Candidate",
    "MissingDependencyError",
    "Selection",
    "extract_answers",
    "extractor_from_params",
    "make_extractor",
    "utility_matrix",
]
