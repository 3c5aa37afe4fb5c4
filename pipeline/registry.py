"""The schema registry's HTTP client (Confluent-compatible API, e.g. Apicurio's ``/apis/ccompat/v7``):
the I/O shell of registry framing. `attach` registers a process's schemas before it starts and
gives `codec.IDS` the calls it makes on a miss.

stdlib `urllib`, synchronous: the calls happen at start, then once per new subject or unknown id,
so they are not worth an HTTP client library or a thread.
"""
from __future__ import annotations

import argparse
import base64
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import quote

import orjson

from pipeline import codec
from pipeline.backoff import Backoff
from pipeline.config import ConfigError, Group, Setting, env, mask_url, secret

log = logging.getLogger("pipeline.registry")

COMPATIBILITY = "BACKWARD"  # a consumer with the newest schema reads every older record of its subject
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
DEFAULT_URL = "http://127.0.0.1:8081/apis/ccompat/v7"


class RegistryRefused(ConfigError):
    """The registry answered and said no (an incompatible or invalid schema, credentials): one line."""

    def __init__(self, line: str, status: int = 0, detail: str = "") -> None:
        super().__init__(line)
        self.status, self.detail = status, detail or line


class RegistryDown(Exception):
    """The registry could not be reached or failed (5xx): worth waiting for."""


SETTINGS = Group("Avro framing and schema registry", (
    Setting("--avro-framing", "AVRO_FRAMING",
            "single-object: C3 01 + the schema's fingerprint + body (Avro's own); registry: byte 0 + the schema's "
            "4-byte registry id + body, for Kafka Connect, ksqlDB, Flink and other registry clients; subjects are "
            "<topic>-value", "single-object", choices=codec.FRAMINGS),
    Setting("--schema-registry-url", "SCHEMA_REGISTRY_URL",
            "the registry's Confluent-compatible API, with registry framing; the user is SCHEMA_REGISTRY_USERNAME, "
            "the password SCHEMA_REGISTRY_PASSWORD or the file SCHEMA_REGISTRY_PASSWORD_FILE", DEFAULT_URL),
    Setting("--schema-registry-cafile", "SCHEMA_REGISTRY_CAFILE", "CA bundle for an https:// registry",
            shown_default="the system's"),
))


class Registry:
    """A Confluent-compatible schema registry at `url` (the API base)."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 cafile: str | None = None, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--schema-registry-url must start with http:// or https://, not {mask_url(url)}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._context = None
        if url.startswith("https://"):
            try:
                self._context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"--schema-registry-cafile: cannot load {cafile}: {exc}") from None

    def _call(self, method: str, path: str, body: Mapping | None = None) -> dict:
        data = orjson.dumps(body) if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._context) as response:
                return orjson.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            message = _message(exc)
            if exc.code >= 500:
                raise RegistryDown(f"{method} {path}: HTTP {exc.code} {message}") from None
            raise RegistryRefused(f"schema registry {mask_url(self.url)}: {method} {path}: HTTP {exc.code}: {message}",
                                  exc.code, message) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):  # waiting will not fix it
                raise RegistryRefused(f"schema registry {mask_url(self.url)}: TLS certificate rejected: "
                                      f"{reason.verify_message}") from None
            raise RegistryDown(str(reason)) from None

    def register(self, subject: str, s: codec.Schema) -> int:
        """The id of `s` under `subject`, registered if new; the subject's rule is set to BACKWARD
        first, so the registry checks this version against those before it."""
        path = f"/subjects/{quote(subject, safe='')}"
        try:
            self._call("PUT", f"/config/{quote(subject, safe='')}", {"compatibility": COMPATIBILITY})
        except RegistryRefused as exc:
            if exc.status not in (401, 403, 405):
                raise
            # a registry run by others may keep rules to its operators: theirs then applies
            log.warning("schema registry %s: cannot set %s on %s (HTTP %d); its own rule applies",
                        mask_url(self.url), COMPATIBILITY, subject, exc.status)
        try:
            answer = self._call("POST", f"{path}/versions", {"schema": s.text})
        except RegistryRefused as exc:
            raise RegistryRefused(f"schema registry {mask_url(self.url)} refused schema {s.name!r} for subject "
                                  f"{subject} (HTTP {exc.status}): {exc.detail}", exc.status, exc.detail) from None
        return int(answer["id"])

    def lookup(self, subject: str, s: codec.Schema) -> int | None:
        """The id of `s` under `subject` if it is registered there; a reader asks, never registers."""
        try:
            return int(self._call("POST", f"/subjects/{quote(subject, safe='')}", {"schema": s.text})["id"])
        except RegistryRefused as exc:
            if exc.status == 404:
                return None
            raise

    def schema_text(self, schema_id: int) -> str:
        return self._call("GET", f"/schemas/ids/{schema_id}")["schema"]

    def wait(self, deadline_s: float | None = None) -> None:
        """Until the registry answers; a registry that is down at start is waited for, with a log
        line per attempt so the wait shows."""
        started, backoff, failed = time.monotonic(), Backoff(initial=0.5, max=10.0, jitter=0), False
        while True:
            try:
                self._call("GET", "/subjects")
                if failed:
                    log.warning("schema registry %s: reachable again", mask_url(self.url))
                return
            except RegistryDown as exc:
                waited = time.monotonic() - started
                if deadline_s is not None and waited >= deadline_s:
                    raise ConfigError(f"schema registry {mask_url(self.url)} unreachable for {waited:.0f} s: {exc}") from None
                log.warning("schema registry %s not reachable (%s); waited %.0f s, retrying in %.1f s",
                            mask_url(self.url), exc, waited, backoff.delay)
                failed = True
                time.sleep(backoff.next())


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        text = orjson.loads(exc.read()).get("message", "")
    except (ValueError, AttributeError, OSError):
        text = ""
    # Apicurio prefixes the Java exception's class name: "io.apicurio...RuleViolationException: ..."
    text = text.split("Exception: ", 1)[-1]
    return " ".join((text or exc.reason or "").split())


def from_args(args: argparse.Namespace) -> Registry | None:
    """The registry of registry framing; None with single-object framing or JSON values."""
    framing = getattr(args, "avro_framing", "single-object")
    if framing not in codec.FRAMINGS:  # argparse checks a flag's choices, not a default from AVRO_FRAMING
        raise ConfigError(f"--avro-framing / AVRO_FRAMING {framing!r}: one of {', '.join(codec.FRAMINGS)}")
    if framing != "registry" or getattr(args, "value_format", "avro") != "avro":
        return None
    return Registry(args.schema_registry_url, env("SCHEMA_REGISTRY_USERNAME"), secret("SCHEMA_REGISTRY_PASSWORD"),
                    args.schema_registry_cafile)


def from_env() -> Registry | None:
    """The same from the environment alone, for helpers that take no flags (`make run`)."""
    if env("AVRO_FRAMING", "single-object") != "registry" or env("VALUE_FORMAT", "avro") != "avro":
        return None
    return Registry(env("SCHEMA_REGISTRY_URL") or DEFAULT_URL, env("SCHEMA_REGISTRY_USERNAME"),
                    secret("SCHEMA_REGISTRY_PASSWORD"), env("SCHEMA_REGISTRY_CAFILE"))


def attach(registry: Registry, writes: Mapping[str, str], reads: Mapping[str, str] | None = None,
           ids: codec.SchemaIds = codec.IDS) -> None:
    """Wait for the registry, register the schema of each subject the process writes (subject ->
    schema name), look up those of the subjects it reads, and let `ids` ask the registry for what
    comes later. A refused schema raises RegistryRefused (one line)."""
    registry.wait()
    for subjects, call in ((writes, registry.register), (reads or {}, registry.lookup)):
        for subject, name in subjects.items():
            s = codec.schema(name)
            while True:
                try:
                    schema_id = call(subject, s)
                    break
                except RegistryDown as exc:  # went away between calls: wait again
                    log.warning("schema registry %s: %s", mask_url(registry.url), exc)
                    registry.wait()
            if schema_id is not None:
                ids.learn(subject, schema_id, s)
    log.info("schema registry %s: %d subjects registered, %d looked up", mask_url(registry.url),
             len(writes), len(reads or {}))

    def register(subject: str, s: codec.Schema) -> int:
        try:
            return registry.register(subject, s)
        except (RegistryDown, RegistryRefused) as exc:
            raise codec.CodecError(f"cannot register subject {subject}: {exc}") from None

    def fetch(schema_id: int) -> str:
        # a short wait at most: this runs on the event loop, and the record is dead-lettered
        # with the reason if the registry stays away
        for attempt in range(3):
            try:
                return registry.schema_text(schema_id)
            except RegistryDown as exc:
                failure = exc
                time.sleep(0.5 * (attempt + 1))
            except RegistryRefused as exc:
                raise codec.CodecError(f"cannot fetch schema id {schema_id}: {exc}") from None
        raise codec.CodecError(f"cannot fetch schema id {schema_id}: schema registry unreachable: {failure}")

    ids.register, ids.fetch = register, fetch
