"""Named API keys: who a TCP client is, told by the key it sends.

``api_keys`` maps a name to a key, or to ``{key: ..., admin: true}``. A key may
be written as ``sha256:<64 hex digits>`` (what ``hoshikage hash-key`` prints),
so the configuration file holds no key a reader could use. The name is the
identity: it owns that client's conversations and is what the journal shows;
the key itself is never logged. The single ``api_key`` of earlier releases is
one admin identity named ``api_key`` (whoever held it could read everything).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
SINGLE_KEY_NAME = "api_key"


@dataclasses.dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # sha256 of the key: the key itself is not kept
    admin: bool = False


def hash_key(key: str) -> str:
    """The form to write in the configuration instead of KEY."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _digest(text: str) -> bytes:
    hashed = _HASHED.match(text)
    return bytes.fromhex(hashed.group(1)) if hashed else hashlib.sha256(text.encode()).digest()


def parse_api_keys(value: Any) -> tuple[ApiKey, ...]:
    """A mapping name -> key | {key, admin}, or (from the environment) "name=key,name=key"; ValueError."""
    if value is None or value == "" or value == {}:
        return ()
    if isinstance(value, str):
        pairs = {}
        for part in value.split(","):
            name, equals, key = part.strip().partition("=")
            if not equals:
                raise ValueError("must be name=key pairs separated by commas, or a mapping of name to key")
            pairs[name.strip()] = key.strip()
        value = pairs
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of name to key (or to {key: ..., admin: true})")
    keys = []
    for name, entry in value.items():
        name = str(name)
        if not _NAME.match(name):
            raise ValueError(f"key name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'")
        admin = False
        if isinstance(entry, dict):
            unknown = set(entry) - {"key", "admin"}
            if unknown:
                raise ValueError(f"key {name!r} has unknown fields {sorted(unknown)}: only key and admin")
            admin = entry.get("admin", False)
            if not isinstance(admin, bool):
                raise ValueError(f"key {name!r}: admin must be true or false")
            entry = entry.get("key")
        if not isinstance(entry, str) or len(entry.strip()) < 8:
            raise ValueError(f"key {name!r} must be a string of at least 8 characters (or sha256:HEX)")
        keys.append(ApiKey(name, _digest(entry.strip()), admin))
    return tuple(keys)


def with_single_key(keys: tuple[ApiKey, ...], single: str | None) -> tuple[ApiKey, ...]:
    """KEYS plus the single ``api_key`` setting, as one admin identity; ValueError on a clash of names."""
    if not single:
        return keys
    if any(key.name == SINGLE_KEY_NAME for key in keys):
        raise ValueError(f"api_keys names '{SINGLE_KEY_NAME}', which the api_key setting already is")
    return (*keys, ApiKey(SINGLE_KEY_NAME, _digest(single), admin=True))


def find_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The key PRESENTED matches; every entry is compared, so the time taken does not say which one was near."""
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for key in keys:
        if hmac.compare_digest(digest, key.digest):
            found = key
    return found
