"""Runs inside the sandboxed child (``python -I -S sandbox_boot.py CONFIG``), before user code.

Stdlib only (the child starts without ``site``). In order, it:

1. lowers its own resource limits (``RLIMIT_CPU``, ``RLIMIT_AS``,
   ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``, ``RLIMIT_NOFILE``, ``RLIMIT_CORE``);
   soft and hard limits are set equal (CPU: hard = soft + 1 s, so SIGXCPU
   comes first), so user code cannot raise them again;
2. installs an audit hook (PEP 578; a hook cannot be removed from Python) that
   refuses: socket creation and use; new processes (fork, exec, spawn,
   ``subprocess``, ``os.system``) and signals to other processes; loading
   ``ctypes``/``_ctypes``/``_posixsubprocess`` (their use could bypass the
   hook); and any write outside the sandbox folder: ``open`` for writing,
   ``os.remove``/``rename``/``mkdir``/``rmdir``/``chmod``/``chown``/``link``/
   ``symlink``/``truncate``/``utime`` and ``shutil`` tree operations;
3. reads ``main.py`` from the sandbox folder and executes it as ``__main__``.

The hook is the second layer: the parent also runs the child in a fresh
network namespace and as an unprivileged user where it can
(:mod:`sglang_ilsi.tools.sandbox`).
"""

import json
import os
import resource
import signal
import sys

CONFIG = json.loads(sys.argv[1])
ROOT = os.path.realpath(CONFIG["root"])

BLOCKED_EVENTS = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata",
    "ctypes.call_function", "os.add_dll_directory", "sys.remote_exec", "os.startfile",
})
BLOCKED_MODULES = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "_multiprocessing"})
# Events whose first argument(s) are paths that must stay inside ROOT.
PATH_EVENTS = {
    "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1,
    "os.truncate": 1, "os.utime": 1, "os.chflags": 1, "os.lchflags": 1, "os.mkfifo": 1,
    "os.mknod": 1, "os.setxattr": 1, "os.removexattr": 1, "shutil.rmtree": 1,
    "shutil.copyfile": 2, "shutil.copytree": 2, "shutil.move": 2, "shutil.chown": 1,
    "os.rename": 2, "os.link": 2, "os.symlink": 2,
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _set_limits() -> None:
    limits = {
        resource.RLIMIT_AS: CONFIG["memory_bytes"],
        resource.RLIMIT_FSIZE: CONFIG["file_bytes"],
        resource.RLIMIT_NOFILE: CONFIG["open_files"],
        resource.RLIMIT_CORE: 0,
    }
    if CONFIG["limit_processes"]:
        limits[resource.RLIMIT_NPROC] = CONFIG["processes"]
    for which, value in limits.items():
        resource.setrlimit(which, (value, value))
    # CPU: SIGXCPU at the soft limit (a clear reason), SIGKILL one second later.
    resource.setrlimit(resource.RLIMIT_CPU, (CONFIG["cpu_seconds"], CONFIG["cpu_seconds"] + 1))
    # A write past RLIMIT_FSIZE raises OSError (EFBIG) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _make_hook(root: str):
    """The audit hook, closed over its (immutable) settings: nothing it reads is
    reachable from user code (the gc introspection that could find it is refused)."""
    sep = os.sep
    blocked_events = BLOCKED_EVENTS
    blocked_modules = BLOCKED_MODULES
    path_events = dict(PATH_EVENTS)
    write_flags = WRITE_FLAGS
    function_attrs = frozenset({"__code__", "__defaults__", "__kwdefaults__", "__closure__"})
    realpath, fsdecode, fspath = os.path.realpath, os.fsdecode, os.fspath

    def inside(path) -> bool:
        if isinstance(path, int):  # an already-open file descriptor
            return True
        if isinstance(path, bytes):
            path = fsdecode(path)
        elif not isinstance(path, str):
            path = fspath(path)
        full = realpath(path)
        return full == root or full.startswith(root + sep)

    def writes(mode, flags) -> bool:
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            return True
        return isinstance(flags, int) and bool(flags & write_flags)

    def hook(event: str, args: tuple) -> None:
        if event in blocked_events or event.startswith(("socket.", "gc.get_")):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args and args[0] in blocked_modules:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "object.__setattr__" and len(args) > 1 and args[1] in function_attrs:
            raise PermissionError(f"sandbox: setting {args[1]} is not allowed")
        paths = ()
        if event == "open" and args and args[0] is not None:
            if writes(args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None):
                paths = (args[0],)
        elif event in path_events:
            paths = args[:path_events[event]]
        if any(p is not None and not inside(p) for p in paths):
            raise PermissionError(f"sandbox: {event} outside the sandbox folder is not allowed")

    return hook


def main() -> None:
    _set_limits()
    os.chdir(ROOT)
    sys.dont_write_bytecode = True
    with open(os.path.join(ROOT, "main.py"), encoding="utf-8") as f:
        source = f.read()
    code = compile(source, "main.py", "exec")
    sys.argv = ["main.py"]
    if CONFIG["audit_hook"]:
        sys.addaudithook(_make_hook(ROOT))
    namespace = {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__}
    exec(code, namespace)


main()
