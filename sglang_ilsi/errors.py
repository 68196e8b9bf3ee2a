"""The two errors sglang-ilsi raises at its users, and the environment it reads.

- :class:`IlsiRequestError`: a request's ``ilsi`` object is invalid (HTTP 400
  naming the parameter);
- :class:`IlsiConfigError`: bad ``--ilsi*`` launch flags (the launch stops).
"""

from __future__ import annotations

# The validated configuration, exported by the launcher to every child process.
ENV_CONFIG = "SGLANG_ILSI_CONFIG"
# ``sglang.Engine`` users enable the plugin with these instead of flags.
ENV_ENABLE = "SGLANG_ILSI"
ENV_ARGS = "SGLANG_ILSI_ARGS"


class IlsiRequestError(ValueError):
    """A request's ``ilsi`` object is invalid. Subclasses ValueError so that
    SGLang's HTTP layer answers 400 with this message."""

    status_code = 400

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(f"ilsi.{param}: {message}" if param else f"ilsi: {message}")


class IlsiConfigError(SystemExit):
    """Bad ``--ilsi*`` flags. A SystemExit, so that it stops the launch even
    though SGLang's plugin loader catches ordinary exceptions."""

    def __init__(self, message: str):
        super().__init__(f"sglang-ilsi: {message}")
