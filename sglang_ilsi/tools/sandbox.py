"""Run untrusted Python in a sandboxed subprocess (reusable: tools, HumanEval).

::

    from sglang_ilsi.tools.sandbox import Limits, run_python

    result = run_python("print(sum(range(10)))", Limits(wall_seconds=5))
    result.ok, result.stdout, result.error        # True, "45\\n", None

Layers, each applied where the machine allows it (``SandboxResult.isolation``
says which were):

- a fresh temporary folder as working directory and ``HOME``, removed after
  the run; an environment holding only ``HOME``, ``TMPDIR`` and ``LC_ALL``;
  ``python -I -S`` (no user site, no ``PYTHON*`` variables, no ``site``);
- a new network namespace (``unshare -n``: no interface but a down loopback),
  when ``unshare`` works here (root or user namespaces);
- an unprivileged user (``setpriv`` to uid/gid 65534, ``nobody``) when the
  server runs as root, so file permissions protect the rest of the machine
  and ``RLIMIT_NPROC`` applies (it never applies to root);
- resource limits set by the child on itself before user code runs
  (:mod:`.sandbox_boot`): CPU seconds, address space, file size, process
  count, open files, no core dumps;
- an audit hook in the child that refuses sockets, new processes, ``ctypes``
  and writes outside the sandbox folder (:mod:`.sandbox_boot`);
- in the parent: a wall-clock deadline after which the child's whole process
  group is killed, and a cap on the bytes read from stdout and stderr (the
  child is killed once either is exceeded).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

BOOT = Path(__file__).with_name("sandbox_boot.py")
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    cpu_seconds: int = 2
    wall_seconds: float = 5.0
    memory_bytes: int = 256 * 1024 * 1024
    output_bytes: int = 16 * 1024  # per stream (stdout, stderr)
    file_bytes: int = 1024 * 1024  # largest file the child may write
    processes: int = 1  # RLIMIT_NPROC for the sandbox user (as the unprivileged user only)
    open_files: int = 64


@dataclass(frozen=True)
class Policy:
    """Which isolation layers to use. ``None`` = use it where it works here.
    Tests turn single layers off to check the others on their own."""

    network_namespace: bool | None = None
    drop_privileges: bool | None = None
    audit_hook: bool = True


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    output_truncated: bool = False
    signal: str | None = None
    wall_ms: float = 0.0
    isolation: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.output_truncated

    @property
    def error(self) -> str | None:
        """A one-line reason the run failed, or None."""
        if self.timed_out:
            return "wall-clock limit exceeded"
        if self.output_truncated:
            return "output limit exceeded"
        if self.signal == "SIGXCPU":
            return "CPU time limit exceeded"
        if self.signal is not None:
            return f"killed by {self.signal}"
        if self.returncode != 0:
            lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
            return lines[-1] if lines else f"exit status {self.returncode}"
        return None

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "error": self.error}


@lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether ``unshare -n`` can start a process here."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@lru_cache(maxsize=1)
def drop_privileges_available() -> bool:
    """Whether we are root and ``setpriv`` can run this Python as ``nobody``."""
    exe = shutil.which("setpriv")
    if exe is None or os.geteuid() != 0:
        return False
    try:
        probe = subprocess.run(
            [exe, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-I", "-S", "-c", "import os; print(os.getuid())"],
            capture_output=True, timeout=20, env={}, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0 and probe.stdout.strip() == str(NOBODY).encode()


def _command(root: str, limits: Limits, policy: Policy) -> tuple[list[str], dict[str, bool]]:
    netns = (network_namespace_available() if policy.network_namespace is None
             else policy.network_namespace)
    drop = drop_privileges_available() if policy.drop_privileges is None else policy.drop_privileges
    config = {
        "root": root,
        "cpu_seconds": max(1, int(limits.cpu_seconds)),
        "memory_bytes": int(limits.memory_bytes),
        "file_bytes": int(limits.file_bytes),
        "open_files": int(limits.open_files),
        "processes": int(limits.processes),
        "limit_processes": drop,
        "audit_hook": policy.audit_hook,
    }
    argv = [sys.executable, "-I", "-S", str(BOOT), json.dumps(config)]
    if drop:
        argv = [shutil.which("setpriv") or "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                "--clear-groups", "--", *argv]
    if netns:
        argv = [shutil.which("unshare") or "unshare", "-n", "--", *argv]
    isolation = {"network_namespace": netns, "unprivileged_user": drop,
                 "audit_hook": policy.audit_hook, "process_limit": drop}
    return argv, isolation


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(proc: subprocess.Popen, limits: Limits) -> tuple[bytes, bytes, bool, bool]:
    """Read both pipes until EOF, the deadline, or the output cap."""
    cap = limits.output_bytes
    deadline = time.monotonic() + limits.wall_seconds
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    timed_out = truncated = False
    with selectors.DefaultSelector() as sel:
        for pipe in buffers:
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = buffers[key.fileobj]
                buf += chunk
                if len(buf) > cap:
                    del buf[cap:]
                    truncated = True
            if truncated:
                break
    if timed_out or truncated:
        _kill_group(proc)
    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), timed_out, truncated


def run_python(code: str, limits: Limits | None = None, *, stdin: str | None = None,
               files: dict[str, str] | None = None, policy: Policy | None = None) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a fresh sandbox folder (with extra ``files``,
    relative names only) and return what it printed and how it ended."""
    limits = limits or Limits()
    policy = policy or Policy()
    start = time.perf_counter()
    root = os.path.realpath(tempfile.mkdtemp(prefix="ilsi-sandbox-"))
    try:
        (Path(root) / "main.py").write_text(code, encoding="utf-8")
        for name, text in (files or {}).items():
            target = (Path(root) / name).resolve()
            if not str(target).startswith(root + os.sep) or name == "main.py":
                raise ValueError(f"sandbox file name {name!r} must be a relative name")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        argv, isolation = _command(root, limits, policy)
        if isolation["unprivileged_user"]:
            for path in [root, *(str(p) for p in Path(root).rglob("*"))]:
                os.chown(path, NOBODY, NOBODY)
        env = {"HOME": root, "TMPDIR": root, "LC_ALL": "C.UTF-8"}
        proc = subprocess.Popen(
            argv, cwd=root, env=env, start_new_session=True, close_fds=True,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if stdin is not None:
                try:
                    proc.stdin.write(stdin.encode("utf-8"))
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            out, err, timed_out, truncated = _collect(proc, limits)
            try:
                returncode = proc.wait(timeout=max(1.0, limits.wall_seconds))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                timed_out = True
                returncode = proc.wait()
        finally:
            _kill_group(proc)  # anything left in the group
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        sig = None
        if returncode is not None and returncode < 0:
            sig = signal.Signals(-returncode).name
        if timed_out or truncated:
            sig = None
        return SandboxResult(
            returncode=returncode, stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"), timed_out=timed_out,
            output_truncated=truncated, signal=sig,
            wall_ms=round((time.perf_counter() - start) * 1000.0, 3), isolation=isolation)
    finally:
        shutil.rmtree(root, ignore_errors=True)
