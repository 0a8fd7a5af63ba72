"""The chaos events (worker SIGKILL, Redis SIGKILL and restart, worker SIGTERM), the hostile
searches pushed onto the query lane, and the final drain."""
from __future__ import annotations

import asyncio
import json
import signal
import time

from .plan import SHUTDOWN_GRACE, UPLOAD_PATH, Upload, index_photos, log, tail
from .services import WorkerProc


class Events:
    async def wait_some_work(self, min_s: float, portion: int | None) -> WorkerProc:
        """Let the current worker run ``min_s`` seconds, release the uploads of ``portion``,
        then wait up to 5 s more until the worker holds claimed jobs."""
        w = self.current
        await asyncio.sleep(max(0.0, w.ready_at + min_s - time.monotonic()))
        if self.spare is not None:  # the next worker must be warm first, to keep the gap short
            await self.until(self.spare.warm, 90, lambda: not self.spare.alive)
        if portion is not None:
            self.release(portion)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and w.alive:
            if await self.held(w) > 0:
                break
            await asyncio.sleep(0.02)
        if not w.alive:
            self.fail(f"worker {w.worker_id} exited by itself (rc={w.proc.returncode}):\n{tail(w.log_path)}")
        return w

    async def event_kill(self, portion: int, last: bool) -> None:
        w = await self.wait_some_work(max(1.0, self.args.kill_every * self.rng.uniform(0.6, 1.4)), portion)
        w.kill()
        self.c.worker_kills += 1
        held = await self.held(w)
        self.c.orphaned += held
        log(f"SIGKILLed worker {w.worker_id} holding {held} claimed jobs")
        if held:
            self.bg.append(asyncio.create_task(self.watch_reap(w, time.monotonic())))
        await self.start_worker(prewarm_next=not last)

    async def watch_reap(self, w: WorkerProc, killed_at: float) -> None:
        key = self.keys.processing(w.worker_id)
        while True:
            try:
                if not await self.r.exists(key):
                    break
            except Exception:
                pass
            await asyncio.sleep(0.1)
        self.c.reap_s.append(time.monotonic() - killed_at)
        log(f"the jobs of dead worker {w.worker_id} were reaped {self.c.reap_s[-1]:.1f}s after the kill")

    async def event_redis(self, portion: int) -> None:
        w = await self.wait_some_work(1.0, None)
        if self.args.redis_kill == "friendly":
            total_before = await self.kill_redis_synced(w)
            self.release(portion)  # these uploads meet the outage: 503, retried
        else:
            total_before = await self.kill_redis_mid_flow(w, portion)
        await self.probe_outage()
        await asyncio.sleep(self.args.redis_down)
        await self.restart_redis(w, total_before)

    async def kill_redis_synced(self, w: WorkerProc) -> int:
        """The friendly kill: pause uploads, let in-flight ones finish, wait 1.5 s and for
        ``WAITAOF`` (the AOF fsynced), then SIGKILL. Uploads resume while Redis is down."""
        import redis

        self.gate.clear()
        if not await self.until(lambda: self.in_flight == 0, 30):
            self.fail("uploads did not pause for the Redis kill")
        await asyncio.sleep(1.5)
        try:
            await self.r.set("chaos:aof-marker", str(time.time()))
            await self.r.execute_command("WAITAOF", 1, 0, 3000)
        except redis.ResponseError as exc:  # a server without WAITAOF: the 1.5 s above must do
            log(f"WAITAOF not available ({exc}); relying on the 1.5 s pause")
        total_before = await self.kill_redis(w)
        self.gate.set()
        return total_before

    async def kill_redis_mid_flow(self, w: WorkerProc, portion: int) -> int:
        """The unfriendly kill: release the uploads of ``portion`` and SIGKILL Redis as soon as
        a seeded random number of them (a quarter to a half) has been answered 202, while the
        others are in flight. No pause, no wait for the AOF."""
        size = (self.first + [self.planned])[portion + 1] - self.first[portion]
        after = self.rng.randint(max(1, size // 4), max(1, size // 2))
        start = len(self.c.accepted)
        self.release(portion)
        if not await self.until(lambda: len(self.c.accepted) - start >= after, 60, step=0.002):
            self.fail(f"only {len(self.c.accepted) - start} of {after} uploads answered before the Redis kill")
        return await self.kill_redis(w)

    async def kill_redis(self, w: WorkerProc) -> int:
        total_before = int(await self.r.hget(self.keys.stats, "total") or 0)
        self.c.inflight_at_kill = self.in_flight
        self.c.redis_killed_at = time.monotonic()
        self.redis_server.stop(kill=True)
        log(f"SIGKILLed redis ({self.args.redis_kill}, appendfsync {self.args.appendfsync}; jobs so far: "
            f"{total_before}, {self.in_flight} uploads in flight); worker {w.worker_id} keeps running")
        return total_before

    async def probe_outage(self) -> None:
        """With Redis down the API must answer 503 to readyz and to an upload."""
        import httpx

        async with httpx.AsyncClient(base_url=self.api_url, timeout=10, trust_env=False) as client:
            ready = await client.get("/readyz")
            up = Upload(-1, "chaos-probe", *index_photos()[0])
            probe = await client.post(UPLOAD_PATH, data={"product_id": up.product_id, "name": "probe"},
                                      files={"image_file": (up.filename, up.data)})
        if probe.status_code == 202:  # cannot be, but then it is an accepted job like any other
            self.c.accepted.append((probe.json()["job_id"], up.product_id))
            self.c.accepted_at[probe.json()["job_id"]] = time.monotonic()
        if ready.status_code != 503 or probe.status_code != 503:
            self.fail(f"with Redis down the API answered readyz={ready.status_code} upload={probe.status_code}")

    async def restart_redis(self, w: WorkerProc, total_before: int) -> None:
        await asyncio.to_thread(self.redis_server.start)
        self.c.redis_back_at = time.monotonic()
        self.c.redis_restarts += 1
        await self.r.aclose()
        self.r = self.new_redis_client()
        total_after = int(await self.r.hget(self.keys.stats, "total") or 0)
        log(f"redis restarted on the same AOF and port: {total_after} jobs")
        if total_after < total_before:
            why = f"redis lost jobs across the restart: {total_before} -> {total_after}"
            if self.args.redis_kill == "unfriendly" and self.args.appendfsync == "everysec":
                log(why + " (measured: everysec may lose the last writes)")
            else:
                self.fail(why)
        if not await self.until_async(lambda: self._exists(self.keys.heartbeat(w.worker_id)), 15,
                                      lambda: not w.alive):
            self.fail(f"worker {w.worker_id} did not come back after the Redis restart "
                      f"(rc={w.proc.poll()}):\n{tail(w.log_path)}")

    async def event_sigterm(self, portion: int) -> None:
        w = await self.wait_some_work(max(1.0, self.args.kill_every * self.rng.uniform(0.6, 1.4)), portion)
        self.c.sigterm_held = await self.held(w)
        w.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        log(f"SIGTERM to worker {w.worker_id} holding {self.c.sigterm_held} claimed jobs")
        await self.until(lambda: not w.alive, SHUTDOWN_GRACE + 10)
        took = time.monotonic() - t
        if w.alive:
            w.kill()
            self.fail(f"worker {w.worker_id} still ran {took:.0f}s after SIGTERM")
        self.c.sigterm_exit = w.proc.returncode
        log(f"worker {w.worker_id} exited {w.proc.returncode} {took:.1f}s after SIGTERM")
        await self.check_clean_exit(w, took)
        await self.start_worker(prewarm_next=True)

    async def check_clean_exit(self, w: WorkerProc, took: float) -> None:
        k = self.keys
        if w.proc.returncode != 0 or took > SHUTDOWN_GRACE:
            self.fail(f"worker {w.worker_id}: exit {w.proc.returncode} after {took:.1f}s "
                      f"(grace {SHUTDOWN_GRACE:.0f}s):\n{tail(w.log_path)}")
        left = await self.r.llen(k.processing(w.worker_id))
        registered = await self.r.sismember(k.workers, w.worker_id)
        beating = await self.r.exists(k.heartbeat(w.worker_id))
        if left or registered or beating:
            self.fail(f"worker {w.worker_id} stopped with {left} jobs in its processing list, "
                      f"registered={bool(registered)}, heartbeat={bool(beating)}")

    async def hostile_searches(self, final: bool) -> None:
        """Push queries the API would refuse (a float filter, odd keys, a limit that is no
        number, not JSON) straight onto the lane. Mid-run a worker may be killed holding them,
        so missing replies are only counted; at the end (``final``) every one must be answered
        (an error reply counts) and a plain search through the API must answer 200."""
        from batcher.queue.messages import QueryRequest

        oddities = [{"filter": {"price": 1.5}}, {"filter": {"": "x"}}, {"filter": {"k" * 5000: 1}},
                    {"filter": {"a.b": [1, {"c": None}]}}, {"limit": "ten"}, {"filter": "no object"}]
        bodies = [json.loads(QueryRequest("text", text="hostile").to_json()) | odd for odd in oddities]
        try:
            await self.r.rpush(self.keys.requests, *map(json.dumps, bodies), "not json", '{"kind": 3}')
        except Exception as exc:  # noqa: BLE001  (Redis may be down mid-run)
            log(f"hostile searches not sent: {exc!r}")
            return
        self.c.hostile_sent += len(bodies)
        answered = await asyncio.gather(*(self.reply_seen(b["id"]) for b in bodies))
        self.c.hostile_answered += sum(answered)
        log(f"hostile searches: {sum(answered)} of {len(bodies)} answered ({'final' if final else 'mid-run'})")
        if final:
            if not all(answered):
                self.fail(f"the query lane left {answered.count(False)} hostile searches unanswered")
            await self.plain_search_answers()

    async def reply_seen(self, request_id: str) -> bool:
        try:
            return await self.r.blpop([self.keys.reply(request_id)], timeout=20) is not None
        except Exception:  # noqa: BLE001
            return False

    async def plain_search_answers(self) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.api_url, timeout=30, trust_env=False) as client:
            resp = await client.post("/api/v1/search", json={"text": "a product photo", "limit": 3})
        if resp.status_code != 200 or not resp.json().get("results"):
            self.fail(f"after the hostile searches a plain search answered {resp.status_code}: {resp.text[:200]}")

    async def drain(self) -> None:
        """Wait until the last worker has finished everything, then stop it with SIGTERM."""
        w = self.current
        log(f"draining with worker {w.worker_id}")
        last = {}
        while True:
            try:
                last = await self.snapshot()
            except Exception as exc:
                last = {"error": repr(exc)}
            s = last.get("stats", {})
            if (not last.get("error") and last["queue"] == 0 and last["delayed"] == 0
                    and not last["processing"] and last["workers"] == [w.worker_id]
                    and s.get("queued", 0) == 0 and s.get("processing", 0) == 0):
                break
            if not w.alive:
                raise RuntimeError(f"the last worker exited (rc={w.proc.returncode}) before the end:\n"
                                   f"{tail(w.log_path)}\nstate: {last}")
            await asyncio.sleep(0.25)
        log(f"drained: {last}")
        w.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        await self.until(lambda: not w.alive, SHUTDOWN_GRACE + 10)
        if w.alive:
            w.kill()
        self.c.final_exit = w.proc.returncode
        await self.check_clean_exit(w, time.monotonic() - t)
        if self.spare is not None:
            self.spare.kill()
        await asyncio.gather(*self.bg)
