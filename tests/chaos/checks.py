"""The checks after the drain: no accepted job lost (but what a Redis kill may explain,
see loss.py), clean queue structures, exact counters, one Qdrant point per product, from its
newest upload, none for a deleted product."""
from __future__ import annotations

import asyncio

from .loss import kill_window, loss_failures, split_lost
from .plan import log


class Checks:
    async def check(self) -> dict:
        import httpx

        k, r = self.keys, self.r
        # job records, by scanning the job hashes
        records: dict[str, tuple[str, str]] = {}
        async for key in r.scan_iter(match=f"{k.tag}:job:*", count=1000):
            status, pid = await r.hmget(key, "status", "product_id")
            records[key.decode().rsplit(":", 1)[1]] = ((status or b"").decode(), (pid or b"").decode())
        images = [key async for key in r.scan_iter(match=f"{k.tag}:image:*", count=1000)]
        snap = await self.snapshot()
        # every accepted job, through the API
        accepted = dict(self.c.accepted)
        statuses: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10, trust_env=False) as client:
            sem = asyncio.Semaphore(16)

            async def one(job_id: str) -> None:
                async with sem:
                    for _ in range(10):
                        resp = await client.get(f"/api/v1/queue/status/{job_id}")
                        if resp.status_code != 503:
                            break
                        self.c.late_503 += 1  # see the docstring: pooled connections of before the restart
                        await asyncio.sleep(0.2)
                    statuses[job_id] = resp.json()["status"] if resp.status_code == 200 else f"http-{resp.status_code}"

            await asyncio.gather(*(one(j) for j in accepted))
            api_stats = (await client.get("/api/v1/queue/stats")).json()
        completed = sum(s == "completed" for s in statuses.values())
        superseded = sum(s == "superseded" for s in statuses.values())
        losses = self.judge_losses(accepted, statuses)
        extra = sorted(set(records) - set(accepted))
        by_status = {s: sum(st == s for st, _ in records.values())
                     for s in ("queued", "processing", "completed", "failed", "superseded")}
        for j in extra:
            if records[j][0] not in ("completed", "superseded"):
                self.fail(f"extra job {j} (no 202 seen) is {records[j][0]}")
        # queue structures; only the undecodable photos of the version races stay failed
        for name in ("queue", "delayed"):
            if snap[name]:
                self.fail(f"{k.tag}:{name} still holds {snap[name]} jobs")
        failed_ok = {j for j in self.c.doomed if statuses.get(j) == "failed"}
        if {m.decode() for m in await r.zrange(k.failed, 0, -1)} != failed_ok:
            self.fail(f"{k.tag}:failed holds {snap['failed']} jobs; {len(failed_ok)} undecodable uploads failed")
        kept = [key for key in images if key.decode().rsplit(":", 1)[1] in failed_ok]
        kept_bytes = sum([await r.strlen(key) for key in kept])
        images = [key for key in images if key not in kept]
        if snap["processing"]:
            self.fail(f"processing lists not empty: {snap['processing']}")
        if snap["workers"]:
            self.fail(f"workers still registered: {snap['workers']}")
        if images:
            self.fail(f"{len(images)} image keys left behind, e.g. {images[0].decode()}")
        if api_stats.get("image_bytes") != kept_bytes:  # the byte budget's counter: exact through every crash
            self.fail(f"the byte budget counts {api_stats.get('image_bytes')} image bytes; "
                      f"the failed photos kept for a retry hold {kept_bytes}")
        # counters == records
        want = dict(by_status, total=len(records))
        if api_stats.get("jobs") != want:
            self.fail(f"GET /api/v1/queue/stats jobs={api_stats.get('jobs')} but the records say {want}")
        raw = {s: snap["stats"].get(s, 0) for s in want}
        if raw != want:
            self.fail(f"raw counters {snap['stats']} but the records say {want}")
        # Qdrant: one point per product with a job record, read after the last worker exited;
        # a product whose every accepted job was lost may have a point or not
        deleted = {pid for pid, (_, job_id) in self.newest().items() if job_id is None}
        products = {pid for _, pid in records.values()} - deleted
        kept = {pid for j, pid in accepted.items() if statuses[j] == "completed"}
        if kept - products - deleted:
            self.fail(f"{len(kept - products - deleted)} products of completed jobs have no job record")
        unfinished = {pid for j, pid in accepted.items() if not self.finished(j, statuses[j])}
        maybe = unfinished - products - deleted
        points, missing, duplicates, of_lost = self.check_points(products, maybe)
        stale = self.check_newest_points(statuses, unfinished)
        return dict(losses, accepted=len(accepted), completed=completed, superseded=superseded,
                    extra=len(extra), products=len(products), deleted=len(deleted), points=points,
                    points_of_lost=of_lost, missing_points=missing, duplicates=duplicates, stale_points=stale)

    def finished(self, job_id: str, status: str) -> bool:
        """Where an accepted job may end: completed, or superseded by a newer upload or a delete;
        an undecodable photo of the version races may also fail."""
        return status in ("completed", "superseded") or (status == "failed" and job_id in self.c.doomed)

    def judge_losses(self, accepted: dict[str, str], statuses: dict[str, str]) -> dict:
        """Accepted jobs not completed at the end, split by the Redis kill window (loss.py)."""
        c, a = self.c, self.args
        window = kill_window(c.redis_killed_at, c.redis_back_at) if c.redis_back_at is not None else None
        lost_at = {j: c.accepted_at.get(j, 0.0) for j, s in statuses.items() if not self.finished(j, s)}
        at_kill, other = split_lost(lost_at, window)
        for j in (other + at_kill)[:10]:
            when = f"{lost_at[j] - c.redis_killed_at:+.2f}s from the Redis kill" if window else "no Redis kill"
            log(f"lost: accepted job {j} (product {accepted[j]}) is {statuses[j]}; 202 at {when}")
        for reason in loss_failures(len(at_kill), len(other), a.redis_kill, a.appendfsync):
            self.fail(reason)
        at_risk = sum(window.holds(t) for t in c.accepted_at.values()) if window else 0
        return {"lost": len(lost_at), "lost_at_redis_kill": len(at_kill), "at_risk": at_risk}

    def stored_payloads(self) -> dict[str, dict]:
        """Point id -> payload of every stored point, read through the worker's own store once
        the last worker has exited (the embedded folder has one owner)."""
        from batcher.store import StoreConfig, open_store
        from batcher.store.cli import records

        store = open_store(StoreConfig(path=str(self.qdrant_path)), None)
        try:
            return {i: payload for page, _ in records(store, 1000) for i, _, payload in page}
        finally:
            store.close()

    def check_points(self, products: set[str], maybe: set[str]) -> tuple[int, int, int, int]:
        """(points, products without a point, duplicate or unknown points, points of ``maybe``)."""
        from batcher.store import point_id

        stored = self.stored_payloads()
        count = len(stored)
        seen = [(i, payload.get("product_id")) for i, payload in stored.items()]
        found = set(stored) & {point_id(p) for p in products | maybe}
        missing = [p for p in products if point_id(p) not in found]
        of_lost = sum(point_id(p) in found for p in maybe)
        in_points = [pid for _, pid in seen]
        duplicates = len(in_points) - len(set(in_points))
        strangers = {pid for pid in in_points if pid not in products | maybe}
        wrong_id = [pid for i, pid in seen if pid is not None and i != point_id(pid)]
        if count != len(products) + of_lost or len(seen) != count:
            self.fail(f"qdrant holds {count} points ({len(seen)} scrolled) for {len(products)} products "
                      f"and {of_lost} products of lost jobs")
        if missing:
            self.fail(f"{len(missing)} products have no point, e.g. {sorted(missing)[:5]}")
        if duplicates or strangers or wrong_id:
            self.fail(f"qdrant: {duplicates} duplicate products, unknown {sorted(strangers)[:5]}, "
                      f"wrong ids {wrong_id[:5]}")
        return count, len(missing), duplicates + len(strangers) + len(wrong_id), of_lost

    def check_newest_points(self, statuses: dict[str, str], lost: set[str]) -> int:
        """Every product's point is its newest upload's (version, sha, job id); a product whose
        newest event is a delete has no point. Products of a lost job are not judged. Returns
        the number of products whose point is not what their newest event says."""
        newest = self.newest()
        judged = {pid: e for pid, e in newest.items() if pid not in lost}
        points = {p["product_id"]: p for p in self.stored_payloads().values() if p.get("product_id") in judged}
        wrong = []
        for pid, (version, job_id) in judged.items():
            p = points.get(pid)
            want = None if job_id is None else (version, self.c.shas[job_id], job_id)
            got = None if p is None else (p.get("version"), p.get("image_sha256"), p.get("job_id"))
            if got != want or (job_id is not None and statuses.get(job_id) != "completed"):
                wrong.append(f"{pid}: want {want} ({statuses.get(job_id)}), stored {got}")
        if wrong:
            self.fail(f"{len(wrong)} products do not hold their newest upload, e.g. {wrong[:3]}")
        product_of = dict(self.c.accepted)
        for job_id, status in statuses.items():
            if status == "superseded" and self.c.versions.get(job_id, 0) >= newest[product_of[job_id]][0]:
                self.fail(f"job {job_id} is superseded but is its product's newest upload")
        return len(wrong)
