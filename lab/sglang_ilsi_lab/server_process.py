"""Start and stop an SGLang server process (for the demo, tests and benchmarks).

The server runs in its own process group, so stopping it kills exactly the
processes it started (SGLang spawns a scheduler and a detokenizer) and
nothing else on the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from sglang_ilsi.engine.cpu import portability


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, ``kill``) into ``SystemExit(143)`` in this process, so
    that ``with ServerProcess(...)`` blocks stop their servers on the way out; the
    default action ends the process at once and leaves the servers running. Call it
    from the main thread of a command that starts servers."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


# Flags that make SGLang practical on a small CPU-only machine.
CPU_FLAGS = (
    "--device", "cpu",
    "--attention-backend", "torch_native",
    "--sleep-on-idle",
    "--skip-server-warmup",
    "--max-total-tokens", "8192",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m sglang.launch_server`` with the given arguments.

    ``ilsi_args`` are our flags (``["--ilsi", ...]``) or None to run SGLang
    with the plugin disabled. ``extra_env`` is added to the environment.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        ilsi_args: Sequence[str] | None = ("--ilsi",),
        sglang_args: Sequence[str] = (),
        *,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        startup_timeout: float = 240.0,
        log_path: str | None = None,
    ):
        self.model_path = str(model_path)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        cpu = [] if portability.cuda_available() else list(CPU_FLAGS)
        self.argv = [
            sys.executable, "-m", "sglang.launch_server",
            "--model-path", self.model_path,
            "--host", "127.0.0.1", "--port", str(self.port),
            *cpu, *sglang_args, *(ilsi_args or ()),
        ]
        self.env = {**os.environ, **(extra_env or {})}
        self.env.pop("SGLANG_ILSI_CONFIG", None)  # never inherit a parent's plugin config
        self.startup_timeout = startup_timeout
        self.log_path = log_path or tempfile.mktemp(prefix="sglang-ilsi-server-", suffix=".log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"SGLang server exited with {self.proc.returncode}; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"SGLang server not healthy in {self.startup_timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
