"""``server_process.exit_on_sigterm``: a command that starts servers and is sent SIGTERM
(``timeout``, ``kill``) leaves through ``finally`` / ``__exit__``, so its servers stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

PROGRAM = """
import sys, time
from sglang_ilsi_lab.server_process import exit_on_sigterm
exit_on_sigterm()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    open(sys.argv[1], "w").write("stopped")
"""


def test_sigterm_runs_the_cleanup_and_exits_143(tmp_path):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, str(marker)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert time.monotonic() - start < 20
    assert marker.read_text() == "stopped"
