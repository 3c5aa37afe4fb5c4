"""`pipeline` subcommands as processes for end-to-end tests, and their orderly stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def spawn(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def stop(*procs: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to all first (they shut down in parallel), then wait; kill what outlives `timeout`."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
