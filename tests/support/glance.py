"""A real Glance for the reconciler's tests: `glance` 33 from PyPI in a virtualenv of its own
(stack/openstack.sh), its WSGI application (`glance.common.wsgi_app.init_app`) under the standard
library's WSGI server (Glance 33 runs only under a WSGI server), SQLite made by `glance-manage
db_sync`, a file store, no authentication (the paste pipeline's unauthenticated context; the old
default policies, which let that context act). Its notifications go into the local RabbitMQ through
oslo.messaging, on an exchange of the test's own."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests

from tests.support.ironic import ROOT, free_port

CONF = """[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:5672/
control_exchange = {exchange}
enabled_backends = file1:file
[oslo_messaging_notifications]
driver = messagingv2
topics = notifications
[database]
connection = sqlite:///{db}
[glance_store]
default_backend = file1
[file1]
filesystem_store_datadir = {images}
[paste_deploy]
config_file = {paste}
[oslo_policy]
enforce_new_defaults = False
enforce_scope = False
"""
SERVE = """
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

from glance.common import wsgi_app

make_server("127.0.0.1", int(sys.argv[1]), wsgi_app.init_app(), handler_class=Quiet).serve_forever()
"""


def install() -> Path:
    done = subprocess.run(["bash", str(ROOT / "stack" / "openstack.sh"), "glance"], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"Glance could not be installed from PyPI:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class Glance:
    def __init__(self, venv: Path, workdir: Path, exchange: str) -> None:
        self.venv, self.workdir = venv, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "images").mkdir(exist_ok=True)
        paste = workdir / "glance-api-paste.ini"
        paste.write_text((venv / "etc" / "glance" / "glance-api-paste.ini").read_text())
        (workdir / "glance-api.conf").write_text(CONF.format(exchange=exchange, db=workdir / "glance.sqlite",
                                                             images=workdir / "images", paste=paste))
        subprocess.run([str(venv / "bin" / "glance-manage"), "--config-file", str(workdir / "glance-api.conf"),
                        "db_sync"], check=True, capture_output=True, timeout=300)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        log = (self.workdir / "glance.log").open("ab")
        self.proc = subprocess.Popen([str(self.venv / "bin" / "python"), "-c", SERVE, str(self.port)],
                                     env={"OS_GLANCE_CONFIG_DIR": str(self.workdir), "PATH": "/usr/bin:/bin"},
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"Glance exited: {self.log()[-3000:]}"
            try:
                if requests.get(f"{self.url}/v2/images", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"Glance's API did not answer within {timeout} s: {self.log()[-3000:]}")

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
        path = self.workdir / "glance.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def create(self, name: str) -> str:
        r = requests.post(f"{self.url}/v2/images", json={"name": name, "disk_format": "raw", "container_format": "bare"},
                          timeout=30)
        assert r.status_code == 201, r.text[:500]
        return r.json()["id"]

    def put(self, image: str, data: bytes) -> None:
        r = requests.put(f"{self.url}/v2/images/{image}/file", data=data,
                         headers={"Content-Type": "application/octet-stream"}, timeout=60)
        assert r.status_code == 204, r.text[:500]

    def image(self, image: str) -> dict:
        return requests.get(f"{self.url}/v2/images/{image}", timeout=30).json()
