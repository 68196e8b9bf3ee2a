"""SGLang plugin entry point (group ``sglang.srt.plugins``).

SGLang calls :func:`register` first thing in every process it starts: the
launcher (before it parses its arguments), the scheduler, the detokenizer,
and ``sglang.Engine``. The plugin does nothing unless enabled with ``--ilsi``
(or any ``--ilsi-*`` flag) on the command line, or ``SGLANG_ILSI=1`` for
``sglang.Engine``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys

from sglang_ilsi import config as ilsi_config

logger = logging.getLogger(__name__)

_registered = False


def _role() -> str:
    from sglang_ilsi.engine.patches import MAIN, WORKER

    return MAIN if multiprocessing.parent_process() is None else WORKER


def register() -> None:
    """Enable sglang-ilsi in this process if configured; otherwise do nothing."""
    global _registered
    if _registered:
        return
    cfg, rest = ilsi_config.from_environment(sys.argv[1:])
    if cfg is None:
        return
    _registered = True
    # Our flags are ours alone: SGLang's parser must not see them. Children
    # read the validated config from the environment.
    # The launcher's flags may need SGLang's spelling (REST runs as NGRAM).
    launcher = multiprocessing.parent_process() is None
    sys.argv[1:] = ilsi_config.sglang_argv(cfg, rest) if launcher else rest
    os.environ[ilsi_config.ENV_CONFIG] = cfg.to_json()

    from sglang_ilsi.engine.cpu import portability

    portability.activate()
    portability.bind_threads(ilsi_config.parallel_ranks(rest))

    from sglang_ilsi import registry

    for path in cfg.plugin_files:
        registry.load_plugin_file(path)

    from sglang_ilsi.engine import patches
    from sglang_ilsi.engine.http import api
    from sglang_ilsi.engine.speculative import contrastive, lookahead, self_speculative

    api.configure(cfg)
    installed = patches.install(cfg, _role())
    self_speculative.register()
    lookahead.register()
    contrastive.register()
    logger.info("sglang-ilsi enabled (%d touch points)", len(installed))
