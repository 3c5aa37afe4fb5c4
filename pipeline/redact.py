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
from functools import lru_cache
from typing import Any

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


@lru_cache(maxsize=16384)
def is_credential_key(key: str) -> bool:
    return _CREDENTIAL_KEY.search(key) is not None


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


def _walk(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and is_credential_key(key):
                out[key] = _masked(item)
            else:
                out[key] = _walk(item, depth + 1)
        _mask_pairs(out)
        return out
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        return [_walk(item, depth + 1) for item in value]
    return value


def mask(value: Any) -> Any:
    """A copy of `value` with credential-like values replaced by ``"***"``. Raises TooDeep."""
    return _walk(value, 0)
