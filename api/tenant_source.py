"""The tenants in force, and their reload without a restart.

``TENANTS_FILE`` is read at start (a bad file: the API refuses to start, ``ApiSettings.refusal``)
and again when it changes: a request looks at the file's mtime and size at most once a second,
and SIGHUP rereads it at once (``install_sighup``: uvicorn leaves SIGHUP alone, whose default
would stop the process). A reload that fails keeps the tenants in force and logs why.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

from api.tenants import TenantBook, TenantsError, parse_tenants

log = logging.getLogger("clipq.api")
CHECK_INTERVAL_S = 1.0


def read_book(tenants_file: str | None, default_keys: list[str], admin_keys: list[str]) -> TenantBook:
    """Raises ``TenantsError`` naming the file and the place."""
    if not tenants_file:
        return TenantBook({}, default_keys, admin_keys, "API_KEY / ADMIN_API_KEY")
    try:
        text = Path(tenants_file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TenantsError(f"{tenants_file}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    return TenantBook(parse_tenants(text, tenants_file), default_keys, admin_keys, tenants_file)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class TenantSource:
    def __init__(self, tenants_file: str | None, default_keys: list[str], admin_keys: list[str]) -> None:
        self.path, self.default_keys, self.admin_keys = tenants_file, default_keys, admin_keys
        self._stamp = _stamp(tenants_file) if tenants_file else None
        self.book = read_book(tenants_file, default_keys, admin_keys)
        self._checked_at = time.monotonic()
        self.reloads = 0  # successful reloads (tests and logs)

    def current(self) -> TenantBook:
        """The tenants in force, reread first when the file changed (looked at once a second at most)."""
        if self.path and time.monotonic() - self._checked_at >= CHECK_INTERVAL_S:
            self._checked_at = time.monotonic()
            if (stamp := _stamp(self.path)) != self._stamp:
                self._stamp = stamp  # a bad file is reported once, not at every look
                self.reload("the file changed")
        return self.book

    def reload(self, why: str = "SIGHUP") -> bool:
        if not self.path:
            return False
        try:
            self.book = read_book(self.path, self.default_keys, self.admin_keys)
        except TenantsError as exc:
            log.error("tenants not reloaded (%s): %s; the previous tenants stay in force", why, exc)
            return False
        self._stamp = _stamp(self.path)
        self.reloads += 1
        log.info("tenants reloaded (%s): %d tenants", why, len(self.book.tenants))
        return True


def install_sighup(source: TenantSource) -> bool:
    """SIGHUP rereads the tenants file. Only the main thread's loop can take a signal (a test
    client runs the app elsewhere): False there."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, source.reload)
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True


def remove_sighup() -> None:
    try:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    except (RuntimeError, ValueError, NotImplementedError):
        pass
