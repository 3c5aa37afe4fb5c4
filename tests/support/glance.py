"""A real Glance for the reconciler's tests: `glance` 33 from PyPI in a virtualenv of its own
(stack/openstack.sh), its WSGI application (`glance.common.wsgi_app.init_app`) under the standard
library's WSGI server (Glance 33 runs only under a WSGI server), SQLite made by `glance-manage
db_sync`, a file store, no authentication (the paste pipeline's unauthenticated context; the old
default policies, which let that context act). Its notifications go into the local RabbitMQ through
oslo.messaging, on an exchange of the test's own."""
from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.support import openstack_service
from tests.support.openstack_service import ApiProcess

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
    return openstack_service.install("glance")


class Glance(ApiProcess):
    name = "Glance"
    probe = "/v2/images"

    def __init__(self, venv: Path, workdir: Path, exchange: str) -> None:
        super().__init__(venv, workdir)
        (workdir / "images").mkdir(exist_ok=True)
        paste = workdir / "glance-api-paste.ini"
        paste.write_text((venv / "etc" / "glance" / "glance-api-paste.ini").read_text())
        (workdir / "glance-api.conf").write_text(CONF.format(exchange=exchange, db=workdir / "glance.sqlite",
                                                             images=workdir / "images", paste=paste))
        subprocess.run([str(venv / "bin" / "glance-manage"), "--config-file", str(workdir / "glance-api.conf"),
                        "db_sync"], check=True, capture_output=True, timeout=300)

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "python"), "-c", SERVE, str(self.port)]

    def environment(self) -> dict[str, str]:
        return {"OS_GLANCE_CONFIG_DIR": str(self.workdir), "PATH": "/usr/bin:/bin"}

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
