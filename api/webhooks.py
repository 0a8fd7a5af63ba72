"""The webhook deliverer: a background task of the API that sends each ended job's status
document to its ``callback_url``, signed (``api.webhook_config.sign``), at least once.

Each attempt is signed with the ``webhook_secret`` of the delivery's tenant as the tenants file
says at that moment (the tenant is copied from the job's record into the delivery's at its first
attempt): a secret rotated by a reload applies to the next attempt; a tenant gone from the file,
or left without a secret, dead-letters the delivery.

ack.lua and reap.lua make a delivery due in the step that ends its job; this task leases due
deliveries from every shard (``DeliveryStore.lease``: a lease that runs out, its sender dead,
makes the delivery due again), sends up to WEBHOOK_CONCURRENCY at once, apart from indexing,
and settles each: delivered, retried after WEBHOOK_BACKOFF_S doubling (time-outs, connection
errors, 408, 429, 5xx), or dead-lettered (any other answer, a refused address, or
WEBHOOK_MAX_ATTEMPTS used). The host is resolved and every address checked at each attempt,
and the request goes to the very address checked (DNS rebinding changes nothing).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import Callable

import httpx

from api.callbacks import TenantHooks
from api.metrics import ApiMetrics
from api.queue import DeliveryStore
from api.webhook_config import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookConfig, retryable, sign
from batcher.queue.addresses import Target, UrlRefused, parse_url, refusal
from batcher.queue.jobs import DEFAULT_TENANT

log = logging.getLogger("clipq.webhooks")
# how often an idle deliverer looks for due deliveries, unless nudged sooner (a job just ended, as
# announced on ``Keys.finished``; the reaper's outcomes, retries and a Redis Cluster wait for this)
POLL_S = 0.25
LEASE_MARGIN_S = 10  # a lease outlasts an attempt's time-out by this much
STORE_ERROR_PAUSE_S = 1.0
STOP_GRACE_S = 2.0


class Failed(Exception):
    """An attempt that failed: ``final`` when another attempt would fail the same way."""

    def __init__(self, message: str, final: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.final, self.status = final, status


class Deliverer:
    def __init__(self, store: DeliveryStore, config: WebhookConfig, metrics: ApiMetrics, user_agent: str,
                 hooks: Callable[[str], TenantHooks | None]) -> None:
        self.store, self.config, self.metrics = store, config, metrics
        self.hooks = hooks  # a tenant's secret of now (api.callbacks.hooks_of over the tenants in force)
        self.user_agent = user_agent
        self.client = httpx.AsyncClient(timeout=config.timeout_s, follow_redirects=False, trust_env=False)
        self.sending: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._nudged = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def nudge(self, _job_ids: list[str] | None = None) -> None:
        """Look for due deliveries now: some job just ended."""
        self._nudged.set()

    async def stop(self) -> None:
        """Stop at once: a delivery cut short stays leased, and is sent again once its lease ends.
        A send cancelled mid-request can hang in httpx's clean-up (seen about once in ten stops with
        a receiver that had not answered): each step waits STOP_GRACE_S at most."""
        tasks = [t for t in [self._task, *self.sending] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            if pending:
                log.warning("webhooks: %d sends did not stop; left to their leases", len(pending))
        try:
            await asyncio.wait_for(self.client.aclose(), STOP_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("webhooks: the HTTP client did not close in %s s", STOP_GRACE_S)

    async def _run(self) -> None:
        lease_ms = int((self.config.timeout_s + LEASE_MARGIN_S) * 1000)
        while True:
            free = self.config.concurrency - len(self.sending)
            if free <= 0:
                await asyncio.wait(self.sending, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                ids = await self.store.lease(free, lease_ms)
            except Exception as exc:  # Redis away: try again later, nothing is lost
                log.warning("webhooks: cannot lease deliveries: %s", exc)
                await asyncio.sleep(STORE_ERROR_PAUSE_S)
                continue
            for delivery_id in ids:
                task = asyncio.create_task(self._deliver(delivery_id))
                self.sending.add(task)
                task.add_done_callback(self.sending.discard)
            if not ids:
                try:
                    await asyncio.wait_for(self._nudged.wait(), POLL_S)
                except asyncio.TimeoutError:
                    pass
                self._nudged.clear()

    async def _deliver(self, delivery_id: str) -> None:
        try:
            record = await self.store.prepare(delivery_id)
            if record is None:
                await self._settle(delivery_id, 1, Failed("the job's record expired before the first attempt", True))
                return
            attempts = int(record.get("attempts") or 0) + 1
            try:
                await self._send(delivery_id, record)
            except Failed as exc:
                await self._settle(delivery_id, attempts, exc)
                return
            now_ms, settled = await self.store.settle(delivery_id, "delivered")
            if settled:
                self.metrics.webhooks.labels("delivered").inc()
                self.metrics.webhook_latency.observe(max(0, now_ms - int(record["ended_at"])) / 1000)
        except Exception:  # Redis failed: the lease runs out and the delivery is due again
            log.exception("webhooks: delivery %s left to its lease", delivery_id)

    async def _settle(self, delivery_id: str, attempts: int, exc: Failed) -> None:
        fields = {"attempts": attempts, "last_error": str(exc), "last_status": exc.status or ""}
        if exc.final or attempts >= self.config.max_attempts:
            outcome, delay_ms = "dead", 0
        else:
            outcome, delay_ms = "retry", int(self.config.delay_s(attempts) * 1000)
        _, settled = await self.store.settle(delivery_id, outcome, delay_ms, fields)
        if settled:
            self.metrics.webhooks.labels("retried" if outcome == "retry" else "dead").inc()
            log.info("webhooks: delivery %s attempt %d failed (%s): %s", delivery_id, attempts, exc, outcome)

    async def _send(self, delivery_id: str, record: dict[str, str]) -> None:
        try:
            target = parse_url(record["url"])
        except UrlRefused as exc:
            raise Failed(f"the URL is refused: {exc}", True) from None
        address = await self._address(target)
        secret, body = self._secret(record.get("tenant") or DEFAULT_TENANT), record["body"].encode()
        headers = {"Content-Type": "application/json", "User-Agent": self.user_agent, "Host": target.host_header,
                   DELIVERY_HEADER: delivery_id, SIGNATURE_HEADER: sign(secret, body, int(time.time()))}
        literal = f"[{address}]" if ":" in address else address
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            answer = await self.client.post(f"{target.scheme}://{literal}:{target.port}{target.path}",
                                            content=body, headers=headers, extensions=extensions)
        except httpx.TimeoutException:
            raise Failed(f"no answer within {self.config.timeout_s} s", False) from None
        except httpx.TransportError as exc:
            raise Failed(f"cannot connect: {type(exc).__name__}", False) from None
        if not 200 <= answer.status_code < 300:
            raise Failed(f"answered {answer.status_code}", not retryable(answer.status_code), answer.status_code)

    def _secret(self, tenant: str) -> str:
        """The tenant's webhook_secret at this attempt (a rotated one applies at once)."""
        hooks = self.hooks(tenant)
        if hooks is None:
            raise Failed(f"the tenant {tenant!r} is no longer in TENANTS_FILE", True)
        if not hooks.secret:
            raise Failed(f"the tenant {tenant!r} has no webhook_secret any more", True)
        return hooks.secret

    async def _address(self, target: Target) -> str:
        """The first of the host's addresses, once every one of them is allowed."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise Failed("the host cannot be resolved", False) from None
        addresses = [info[4][0] for info in infos]
        for address in addresses:
            if why := refusal(ipaddress.ip_address(address), self.config.allowed):
                raise Failed(f"the host's address is not allowed ({why})", True)
        return addresses[0]
