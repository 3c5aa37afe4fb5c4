"""Mask credential-like values before anything leaves the process.

Three rules, each a table:

* a value under a key whose name looks like a credential (`CREDENTIAL_KEY_PATTERNS`, matched
  case-insensitively anywhere in the key) becomes ``"***"``, at any depth;
* a name/value pair such as a BIOS setting ``{"name": "AdminPassword", "value": "..."}`` (deploy
  template and runbook steps) has its value masked when the name looks like a credential;
* credentials inside URLs in any string (``scheme://user:pass@host``) become ``user:***@``.

Values that reveal nothing are kept as they are: null, the empty string, and Ironic's own
``"******"`` masking (so consumers still see what Ironic masked). The input is never mutated.
"""
from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["CREDENTIAL_KEY_PATTERNS", "MASK", "MAX_DEPTH", "TooDeep", "is_credential_key", "mask", "mask_text"]

MASK = "***"
IRONIC_MASK = "******"

# Nesting deeper than this is not a notification payload (Ironic's deepest, deploy steps, is ~8);
# it also keeps the walk and orjson.dumps (limit 254) safe.
MAX_DEPTH = 128

# Key-name patterns (regular expressions, searched case-insensitively in the key). Broad on
# purpose: masking a harmless field costs little, leaking a password costs a lot. Mirrors
# oslo_utils.strutils._SANITIZE_KEYS, which Ironic itself uses for its "******".
CREDENTIAL_KEY_PATTERNS: tuple[str, ...] = (
    r"passw(or)?d",  # password, passwd, ipmi_password, auth_password, KeyStorePassword
    r"pass(phrase|wd)",
    r"(^|[_\-.])pass$",  # pass, admin_pass, new_pass (not bypass)
    r"^adminpass$",
    r"pswd|^pwd$",  # sys_pswd
    r"secret",  # secret, client_secret, chapsecret, agent_secret_token
    r"token",  # token, auth_token, x-auth-token
    r"private",  # private_key, ssh_private_key, privatekey
    r"credential",  # credential, credentials, keystonecredential
    r"api[_\-.]?key",
    r"(auth|priv|access|encryption|encrypted|signing|ssl|fernet|ceph\w*)[_\-.]?key",  # snmp_auth_key, snmp_priv_key
    r"community",  # SNMP community strings are passwords
    r"cookie",
    r"^authorization$",
    r"configdrive",  # user data, may carry anything
    r"\bkek\b|kek$",
)

_CREDENTIAL_KEY = re.compile("|".join(f"(?:{p})" for p in CREDENTIAL_KEY_PATTERNS), re.IGNORECASE)

# {"<name key>": <credential-like name>, "<value key>": secret}: BIOS/RAID settings in steps.
_NAME_VALUE_PAIRS: tuple[tuple[str, str], ...] = (("name", "value"), ("key", "value"))

# scheme://user:password@host -> scheme://user:***@host
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<password>[^\s@/]+)(?=@)")


class TooDeep(ValueError):
    """The structure is nested deeper than MAX_DEPTH."""


_KEY_CACHE: dict[str, bool] = {}
_KEY_CACHE_MAX = 65536  # payload keys repeat endlessly; a bound keeps odd producers from growing it


def is_credential_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    found = _KEY_CACHE.get(key)
    if found is None:
        found = _CREDENTIAL_KEY.search(key) is not None
        if len(_KEY_CACHE) < _KEY_CACHE_MAX:
            _KEY_CACHE[key] = found
    return found


def _masked(value: Any) -> Any:
    if value is None or value == "" or value == IRONIC_MASK:
        return value
    return MASK


def mask_text(text: str) -> str:
    """Mask passwords embedded in URLs inside a string."""
    if "://" not in text or "@" not in text:
        return text
    return _URL_CREDENTIALS.sub(_url_repl, text)


def _url_repl(match: re.Match[str]) -> str:
    password = match.group("password")
    if password == IRONIC_MASK or password == MASK:
        return match.group(0)
    return match.group("head") + MASK


def _mask_pairs(out: dict) -> None:
    for name_key, value_key in _NAME_VALUE_PAIRS:
        name = out.get(name_key)
        if isinstance(name, str) and value_key in out and is_credential_key(name):
            out[value_key] = _masked(out[value_key])


_SCALARS = frozenset({int, float, bool, type(None)})


# The walk is the hot path of the bridge (every payload, every key): type dispatch is inlined
# and the key verdicts are cached, which makes it several times faster than a plain recursion.
def _walk_dict(value: dict, depth: int) -> dict:
    if depth >= MAX_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    out = {}
    cache = _KEY_CACHE
    for key, item in value.items():
        credential = cache.get(key)
        if credential is None:
            credential = is_credential_key(key)
        if credential:
            out[key] = _masked(item)
            continue
        kind = type(item)
        if kind is str:
            out[key] = item if "://" not in item else mask_text(item)
        elif kind is dict:
            out[key] = _walk_dict(item, depth + 1)
        elif kind is list:
            out[key] = _walk_list(item, depth + 1)
        elif kind in _SCALARS:
            out[key] = item
        else:
            out[key] = _walk(item, depth + 1)
    if "name" in out or "key" in out:
        _mask_pairs(out)
    return out


def _walk_list(value: list, depth: int) -> list:
    if depth >= MAX_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    out: list = []
    append = out.append
    for item in value:
        kind = type(item)
        if kind is str:
            append(item if "://" not in item else mask_text(item))
        elif kind is dict:
            append(_walk_dict(item, depth + 1))
        elif kind is list:
            append(_walk_list(item, depth + 1))
        elif kind in _SCALARS:
            append(item)
        else:
            append(_walk(item, depth + 1))
    return out


def _walk(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return _walk_dict(value, depth)
    if isinstance(value, (list, tuple)):
        return _walk_list(list(value), depth)
    return value


def mask(value: Any) -> Any:
    """A copy of `value` with credential-like values replaced by ``"***"``. Raises TooDeep."""
    return _walk(value, 0)


_QUOTED_PAIR = re.compile(r'(?P<head>\\?"(?P<key>[^"\\]{1,200})\\?"\s*:\s*\\?")(?P<value>[^"\\]*)')


def _mask_broken_json(text: str) -> str:
    """Text that is not JSON (truncated, mangled) may still hold `"password": "..."` pairs."""
    def repl(match: re.Match[str]) -> str:
        if is_credential_key(match.group("key")) and match.group("value") not in ("", IRONIC_MASK):
            return match.group("head") + MASK
        return match.group(0)

    return mask_text(_QUOTED_PAIR.sub(repl, text))


def _mask_doc(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("oslo.message"), str):
        try:
            inner = orjson.loads(doc["oslo.message"])
        except orjson.JSONDecodeError:
            doc = {**doc, "oslo.message": _mask_broken_json(doc["oslo.message"])}
        else:
            masked = mask(inner)
            if masked != inner:
                doc = {**doc, "oslo.message": orjson.dumps(masked).decode()}
    return mask(doc)


def mask_body(body: bytes) -> bytes:
    """A rejected body for the dead-letter topic: as received, byte for byte, unless it holds
    credentials. JSON is masked at any depth, an oslo envelope's inner message too; text that does not
    parse has its quoted credential pairs and URL passwords masked."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        if b'"' not in body and b"://" not in body:
            return body
        text = body.decode("utf-8", "replace")
        masked_text = _mask_broken_json(text)
        return body if masked_text == text else masked_text.encode()
    try:
        masked = _mask_doc(doc)
    except TooDeep:
        text = body.decode("utf-8", "replace")
        masked_text = _mask_broken_json(text)
        return body if masked_text == text else masked_text.encode()
    return body if masked == doc else orjson.dumps(masked)
