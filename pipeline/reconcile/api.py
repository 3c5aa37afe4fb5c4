"""The services' read APIs, through openstacksdk: a connection from clouds.yaml (``OS_CLOUD``,
``OS_CLIENT_CONFIG_FILE``, application credentials, TLS: keystoneauth does the rest), one GET per
question, the answer's fields or None for a 404. Synchronous (requests): the service runs these in
threads, a few at a time.

Failures are `Failed` with a cause from a short list (what the metrics and the log name) and a
detail that never holds a token or a response body: keystoneauth's own messages name the URL and the
status, nothing more.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import catalog, observed
from ..config import ConfigError

__all__ = ["Api", "CAUSES", "Failed", "connect"]

# cause -> what the log line says it means
CAUSES: Mapping[str, str] = {
    "unreachable": "the API does not answer (connection refused or reset, DNS, TLS)",
    "timeout": "the API did not answer in time",
    "denied": "the credentials were refused (401) or lack the reader role (403)",
    "throttled": "the API asks us to slow down (429)",
    "server": "the API failed (5xx)",
    "unexpected": "the API answered something we cannot read",
}
_LIST_FIELDS = ("uuid", "target_power_state", "target_provision_state", *observed.DRIFT_FIELDS)


class Failed(Exception):
    """A question the API did not answer; `cause` is a key of `CAUSES`."""

    def __init__(self, cause: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail
        self.retry_after = retry_after


def connect(cloud: str | None, config_file: str | None, timeout_s: float) -> Any:
    """An openstacksdk Connection to `cloud` of clouds.yaml; ConfigError in one line when there is
    no such cloud or the file cannot be read."""
    import openstack.config
    import openstack.connection
    from openstack import exceptions

    if not cloud:
        raise ConfigError("no cloud to ask: set --os-cloud (OS_CLOUD) to an entry of clouds.yaml")
    try:
        config = openstack.config.OpenStackConfig(config_files=[config_file] if config_file else None)
        region = config.get_one(cloud=cloud, api_timeout=timeout_s)
    except (exceptions.ConfigException, OSError, ValueError) as exc:
        where = config_file or "clouds.yaml"
        raise ConfigError(f"cloud {cloud!r} in {where}: {' '.join(str(exc).split())[:200]}") from None
    return openstack.connection.Connection(config=region)


class Api:
    """GETs of one connection; each call is blocking."""

    def __init__(self, conn: Any, timeout_s: float) -> None:
        self.conn = conn
        self.timeout_s = timeout_s

    def _get(self, service: str, path: str, params: Mapping[str, Any] | None, microversion: str | None) -> Any:
        from keystoneauth1 import exceptions as ks

        try:
            proxy = getattr(self.conn, service)  # made on first use: its version discovery may fail
            # no retries of openstacksdk's own (it retries a 503 for 15 s): the jobs have their backoff
            response = proxy.get(path, params=dict(params or {}), microversion=microversion, raise_exc=False,
                                 timeout=self.timeout_s, connect_retries=0, status_code_retries=0,
                                 retriable_status_codes=[])
        except ks.ConnectTimeout as exc:
            raise Failed("timeout", _one_line(exc)) from None
        except (ks.ConnectFailure, ks.SSLError, ks.DiscoveryFailure, ks.EndpointNotFound) as exc:
            raise Failed("unreachable", _one_line(exc)) from None
        except ks.RequestTimeout as exc:
            raise Failed("timeout", _one_line(exc)) from None
        except ks.ClientException as exc:  # keystone itself refused or failed while getting a token
            raise Failed("denied" if getattr(exc, "http_status", 0) in (401, 403) else "unreachable",
                         _one_line(exc)) from None
        status = response.status_code
        where = f"{service} GET {path} answered {status}"
        if status == 404:
            return None
        if status in (401, 403):
            raise Failed("denied", where)
        if status == 429:
            raise Failed("throttled", where, _retry_after(response.headers.get("Retry-After")))
        if status >= 500:
            raise Failed("server", where)
        if status != 200:
            raise Failed("unexpected", where)
        try:
            return response.json()
        except ValueError:
            raise Failed("unexpected", f"{where} with a body that is not JSON") from None

    def get(self, family: str, resource: str) -> dict | None:
        """The resource's fields, or None when the API does not know it (404)."""
        spec = catalog.OBSERVABLE[family]
        body = self._get(spec.service, spec.path.format(id=resource), None, spec.microversion)
        if body is None:
            return None
        if not isinstance(body, dict):
            raise Failed("unexpected", f"{spec.service} GET {spec.path} answered a {type(body).__name__}")
        return body

    def nodes_page(self, marker: str | None, limit: int) -> tuple[list[dict], str | None]:
        """One page of Ironic's nodes (the fields a drift needs), and the marker of the next, if any."""
        spec = catalog.OBSERVABLE["baremetal.node"]
        params: dict[str, Any] = {"fields": ",".join(_LIST_FIELDS), "limit": limit}
        if marker:
            params["marker"] = marker
        body = self._get(spec.service, spec.listing or "/nodes", params, spec.microversion)
        nodes = body.get("nodes") if isinstance(body, dict) else None
        if not isinstance(nodes, list):
            raise Failed("unexpected", "baremetal GET /nodes answered no list of nodes")
        nodes = [n for n in nodes if isinstance(n, dict) and n.get("uuid")]
        more = len(nodes) >= limit and bool(body.get("next"))
        return nodes, (nodes[-1]["uuid"] if more else None)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: our own backoff will do


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
