"""Tenants: who a key belongs to (``TENANTS_FILE``, ``API_KEY``, ``ADMIN_API_KEY``).

The file is a JSON object ``{"<tenant>": {"api_key": ..., ...}}`` (api/README.md#tenants).
Keys are kept as their sha256 only; a presented key is hashed once and compared with every
known digest in constant time, with no early exit. ``API_KEY`` (comma-separated) holds keys of
the tenant ``default``; ``ADMIN_API_KEY`` keys see every tenant. One key in two tenants is an
error, as is anything malformed: the message names the file and the place.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, fields
from typing import Any

from batcher.queue.addresses import UrlRefused, parse_url
from batcher.queue.jobs import DEFAULT_TENANT

TENANT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
ADMIN = "(ADMIN_API_KEY)"  # the owner of an admin key, in messages


class TenantsError(ValueError):
    """The tenants file (or a key setting) is unusable; the message says where and why."""


@dataclass(frozen=True)
class Tenant:
    name: str
    api_key_sha256: str
    webhook_secret: str | None = None
    webhook_url: str | None = None
    max_queue_depth: int | None = None
    max_queue_bytes: int | None = None


@dataclass(frozen=True)
class Caller:
    """Whose request this is. ``tenant`` None: an admin looking at every tenant; an admin
    who names a tenant (``?tenant=``) is scoped to it, with ``admin`` still true."""

    tenant: str | None
    admin: bool = False

    def sees(self, tenant: str | None) -> bool:
        """Whether a record of ``tenant`` (None or empty: stored before tenants, the default's) is visible."""
        return self.tenant is None or (tenant or DEFAULT_TENANT) == self.tenant


OPTIONAL_INTS = ("max_queue_depth", "max_queue_bytes")
OPTIONAL_STRS = ("webhook_secret", "webhook_url")
KNOWN = {"api_key", *(f.name for f in fields(Tenant) if f.name != "name")}


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _tenant(where: str, name: Any, record: Any) -> Tenant:
    if not isinstance(name, str) or not TENANT_NAME.fullmatch(name):
        raise TenantsError(f"{where}: tenant name {str(name)[:70]!r} must be 1 to 64 letters, digits, _ . -")
    at = f"{where}: tenant {name!r}"
    if not isinstance(record, dict):
        raise TenantsError(f"{at} must be an object")
    if unknown := sorted(set(record) - KNOWN):
        raise TenantsError(f"{at}: unknown field {unknown[0]!r} (known: {', '.join(sorted(KNOWN))})")
    tenant = Tenant(name, _key_sha256(at, record), **_optional(at, record))
    _check_webhook(at, tenant)
    return tenant


def _check_webhook(at: str, tenant: Tenant) -> None:
    """A tenant's webhooks are always signed: a webhook_url needs a webhook_secret."""
    if tenant.webhook_secret is not None and not tenant.webhook_secret:
        raise TenantsError(f"{at}: webhook_secret must be a non-empty string")
    if tenant.webhook_url is None:
        return
    if not tenant.webhook_secret:
        raise TenantsError(f"{at}: webhook_url needs webhook_secret (webhooks are always signed)")
    try:
        parse_url(tenant.webhook_url)
    except UrlRefused as exc:
        raise TenantsError(f"{at}: webhook_url: {exc}") from None


def _key_sha256(at: str, record: dict) -> str:
    key, sha = record.get("api_key"), record.get("api_key_sha256")
    if (key is None) == (sha is None):
        raise TenantsError(f"{at}: give exactly one of api_key and api_key_sha256")
    if key is not None:
        if not isinstance(key, str) or not key.strip():
            raise TenantsError(f"{at}: api_key must be a non-empty string")
        return digest(key).hex()
    if not isinstance(sha, str) or not SHA256_HEX.fullmatch(sha.lower()):
        raise TenantsError(f"{at}: api_key_sha256 must be 64 hexadecimal characters")
    return sha.lower()


def _optional(at: str, record: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in OPTIONAL_INTS:
        value = record.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise TenantsError(f"{at}: {name} must be a positive integer")
        out[name] = value
    for name in OPTIONAL_STRS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise TenantsError(f"{at}: {name} must be a string")
        out[name] = value
    return out


def parse_tenants(text: str, where: str) -> dict[str, Tenant]:
    """The tenants of a file's text; ``where`` (its path) starts every error message."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TenantsError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(body, dict):
        raise TenantsError(f"{where}: must be a JSON object of tenant name: record")
    return {name: _tenant(where, name, record) for name, record in body.items()}


@dataclass(frozen=True)
class Entry:
    digest: bytes
    caller: Caller
    owner: str  # for messages: the tenant's name, or ADMIN


class TenantBook:
    """Every key that opens the API, and the tenants' records."""

    def __init__(self, tenants: dict[str, Tenant], default_keys: list[str], admin_keys: list[str],
                 where: str = "TENANTS_FILE") -> None:
        self.tenants = tenants
        entries = [Entry(bytes.fromhex(t.api_key_sha256), Caller(t.name), t.name) for t in tenants.values()]
        entries += [Entry(digest(k), Caller(DEFAULT_TENANT), DEFAULT_TENANT) for k in default_keys]
        entries += [Entry(digest(k), Caller(None, admin=True), ADMIN) for k in admin_keys]
        _refuse_shared(entries, where)
        self.entries = tuple(entries)

    @property
    def open(self) -> bool:
        """No key at all (ALLOW_ANONYMOUS): every caller is the default tenant."""
        return not self.entries

    @property
    def single(self) -> bool:
        """Only the default tenant exists (besides admins): its view is the whole queue's, as before tenants."""
        return not (set(self.tenants) - {DEFAULT_TENANT})

    def resolve(self, key: str) -> Caller | None:
        """The caller a key belongs to, or None: every digest is compared, whichever matches."""
        given, found = digest(key), None
        for entry in self.entries:
            if hmac.compare_digest(given, entry.digest) and found is None:
                found = entry.caller
        return found


def _refuse_shared(entries: list[Entry], where: str) -> None:
    owner: dict[bytes, str] = {}
    for e in entries:
        first = owner.setdefault(e.digest, e.owner)
        if first != e.owner:
            raise TenantsError(f"{where}: one key belongs to two tenants: {first!r} and {e.owner!r}")
