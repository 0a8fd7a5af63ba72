"""Fetch an ``image_url`` for the decode stage and the query lane (standard library only): the
claim stage makes a worker's one ``UrlFetcher``, and the query lane uses it too.

``http.client`` rather than httpx: the fetcher must connect to the exact address the address
policy checked (``batcher.queue.addresses``) while the request still carries the URL's host (the
``Host`` header, and the TLS server name and certificate check), and must read the body
chunk by chunk under a byte limit and a deadline. Over a socket of our own that is a few lines
here; it also keeps the worker free of another dependency and of proxy variables (a proxy would
reach what the policy refuses).

Rules: http and https only; every hop (at most ``MAX_REDIRECTS`` redirects) is parsed,
resolved and checked again; a connect timeout, a timeout per read and a deadline for the whole
fetch; a body over ``max_bytes`` is dropped as soon as it passes the limit (or at once when its
``Content-Length`` says so); the body must sniff as JPEG, PNG or WebP. A ``FetchError`` is
``transient`` (timeouts, connection errors, 5xx, 408, 429: the job retries with backoff) or
permanent (any other answer, a refused address, a bad body: the job fails at once). Its message
is built from our words only, so it is safe to show.
"""
from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin

from batcher.queue.addresses import Network, Target, UrlRefused, parse_url, refusal
from batcher.queue.images import sniff

log = logging.getLogger("clipq.fetch")
MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({408, 429})
CHUNK = 64 * 1024
PREFIX = "cannot fetch image_url: "


class FetchError(Exception):
    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(PREFIX + reason)
        self.transient = transient


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    allowed: tuple[Network, ...] = ()


class _PinnedConnection(http.client.HTTPConnection):
    """A connection to the first of the checked addresses that answers, never to a name resolved
    again; TLS (when ``tls`` is given) names the URL's host and checks its certificate."""

    def __init__(self, target: Target, addresses: list[str], connect_timeout: float,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port)
        self.addresses, self.connect_timeout, self.tls = addresses, connect_timeout, tls
        self.raw: socket.socket | None = None  # kept: the response may outlive self.sock

    def connect(self) -> None:
        for i, address in enumerate(self.addresses):
            try:
                sock = socket.create_connection((address, self.port), self.connect_timeout)
                break
            except OSError:
                if i == len(self.addresses) - 1:
                    raise
        if self.tls is not None:
            sock.settimeout(self.connect_timeout)
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = self.raw = sock


class UrlFetcher:
    def __init__(self, limits: FetchLimits, tls: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        self._tls = tls  # default: the system's trust store, made at the first https URL (~0.1 s)

    def fetch(self, url: str) -> bytes:
        """The image bytes at ``url``, or ``FetchError``."""
        deadline = time.monotonic() + self.limits.total_timeout
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target = parse_url(url)
            except UrlRefused as exc:
                raise FetchError(str(exc)) from None
            body, location = self._get(target, self._resolve(target), deadline)
            if location is None:
                return _image(body)
            url = urljoin(url, location)
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    def _resolve(self, target: Target) -> list[str]:
        """The addresses to connect to; every address of the host must be allowed."""
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError("the host cannot be resolved", exc.errno == socket.EAI_AGAIN) from None
        except UnicodeError:  # a name IDNA cannot encode (an empty label, a label over 63 characters)
            raise FetchError("the host name is not valid") from None
        addresses = [info[4][0] for info in infos]
        for address in addresses:
            if why := refusal(ipaddress.ip_address(address), self.limits.allowed):
                log.info("image_url refused: %s resolves to %s (%s)", target.host, address, why)
                raise FetchError(f"the host's address is not allowed ({why})")
        return addresses

    def _get(self, target: Target, addresses: list[str], deadline: float) -> tuple[bytes, str | None]:
        """(body, None) for a 200, (b"", location) for a redirect; else ``FetchError``."""
        tls = self._tls_context() if target.scheme == "https" else None
        conn = _PinnedConnection(target, addresses, min(self.limits.connect_timeout, _left(deadline)), tls)
        try:
            conn.connect()
            conn.raw.settimeout(self._read_timeout(deadline))
            conn.request("GET", target.path, headers={
                "Host": target.host_header, "Accept": "image/jpeg, image/png, image/webp",
                "User-Agent": "clipq-worker"})
            resp = conn.getresponse()
            location = resp.getheader("Location")
            if resp.status in REDIRECTS and location:
                return b"", location
            if resp.status != 200:
                transient = resp.status >= 500 or resp.status in TRANSIENT_STATUSES
                raise FetchError(f"the server answered HTTP {resp.status}", transient)
            return self._read(conn, resp, deadline), None
        except (TimeoutError, socket.timeout):
            raise FetchError("timed out", True) from None
        except ssl.SSLCertVerificationError:
            raise FetchError("the server's TLS certificate is not valid for its host") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"the connection failed ({exc.__class__.__name__})", True) from None
        finally:
            conn.close()

    def _read(self, conn: _PinnedConnection, resp: http.client.HTTPResponse, deadline: float) -> bytes:
        limit = self.limits.max_bytes
        declared = resp.getheader("Content-Length") or ""
        if declared.isdigit() and int(declared) > limit:
            raise FetchError(f"the body is over the limit of {limit} bytes")
        parts, size = [], 0
        while True:
            conn.raw.settimeout(self._read_timeout(deadline))
            chunk = resp.read1(CHUNK)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise FetchError(f"the body is over the limit of {limit} bytes")
            parts.append(chunk)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:  # two threads may both make one: harmless
            self._tls = ssl.create_default_context()
        return self._tls

    def _read_timeout(self, deadline: float) -> float:
        return min(self.limits.read_timeout, _left(deadline))


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timed out", True)
    return left


def _image(body: bytes) -> bytes:
    if not body:
        raise FetchError("the body is empty")
    if sniff(body) is None:
        raise FetchError("the body is not a JPEG, PNG or WebP image (judged by its content)")
    return body
