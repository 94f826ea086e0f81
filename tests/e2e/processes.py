"""Real `mapsync emulate` processes for the tests that stop, kill or move them."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def emulate(config: Path, port: int) -> subprocess.Popen[str]:
    """`mapsync emulate --write-config config` on ``port``, returned once it serves."""
    proc = subprocess.Popen([sys.executable, "-m", "mapsync.engine.cli", "emulate", "--port", str(port),
                             "--contacts", "30", "--write-config", str(config)], cwd=config.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # a handful of lines, then it serves
        if "Press Ctrl+C" in line:
            return proc
    raise AssertionError(f"the emulator did not start: exit {proc.wait()}")
