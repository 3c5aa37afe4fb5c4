"""A real OpenStack API service (Ironic, Glance) from PyPI, run for a test: installed once into a
cached virtualenv by stack/openstack.sh, started on a free port, ready when its API answers,
stopped with SIGTERM (killed if it lingers). Each service says only its command and probe."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def install(service: str) -> Path:
    """The service's virtualenv, installed on first use; the installer's own error when it fails."""
    done = subprocess.run(["bash", str(ROOT / "stack" / "openstack.sh"), service], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"{service} could not be installed from PyPI:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class ApiProcess:
    """One service process; subclasses set `name` and `probe` (a path that answers 200 once the
    API serves) and give `command()` and `environment()`."""

    name = "service"
    probe = "/"

    def __init__(self, venv: Path, workdir: Path) -> None:
        self.venv, self.workdir = venv, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None  # the test's own

    def start(self, timeout: float = 120) -> None:
        log = (self.workdir / f"{self.name.lower()}.log").open("ab")
        self.proc = subprocess.Popen(self.command(), env=self.environment(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited: {self.log()[-3000:]}"
            try:
                if requests.get(f"{self.url}{self.probe}", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{self.name}'s API did not answer within {timeout} s: {self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        path = self.workdir / f"{self.name.lower()}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def send_reply(handler: Any, status: int, headers: dict[str, str], body: bytes) -> None:
    """An http.server handler's whole answer: status, headers, length, body (the stand-in APIs')."""
    handler.send_response(status)
    for k, v in headers.items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
