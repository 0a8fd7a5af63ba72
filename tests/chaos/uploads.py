"""The uploads, in portions released at each chaos event, and the version races: re-uploads
racing retries and reaps, deletes racing queued uploads."""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time

from .plan import BAD_PHOTO, RACES, UPLOAD_PATH, Upload, index_photos, log


class Uploads:
    def release(self, portion: int) -> None:
        """Let the uploads of ``portion`` go (each portion once; later ones wait)."""
        if portion < len(self.released) and not self.released[portion].is_set():
            self.released_at[portion] = time.monotonic()
            self.released[portion].set()

    async def upload_all(self, plan: list[Upload]) -> None:
        """Upload ``plan`` in the portions ``self.first``, each in bursts of ``--concurrency`` 0.25 s apart."""
        import httpx

        a, first = self.args, self.first
        portions = len(first)
        todo: asyncio.Queue[Upload] = asyncio.Queue()
        for up in plan:
            todo.put_nowait(up)
        limits = httpx.Limits(max_connections=a.concurrency, max_keepalive_connections=a.concurrency)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30, limits=limits, trust_env=False) as client:
            async def uploader() -> None:
                while not todo.empty():
                    up = todo.get_nowait()
                    portion = max(p for p in range(portions) if first[p] <= up.index)
                    await self.released[portion].wait()
                    due = self.released_at[portion] + (up.index - first[portion]) // a.concurrency * 0.25
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    await self.upload_one(client, up)

            await asyncio.gather(*(uploader() for _ in range(a.concurrency)))
        log(f"uploads done: {len(self.c.accepted)} accepted so far (version races included), {len(plan)} planned")

    async def upload_one(self, client, up: Upload) -> str | None:
        import httpx

        form = {"product_id": up.product_id, "name": f"Chaos product {up.product_id}",
                "description": f"photo {up.filename}, upload {up.index}",
                "metadata": json.dumps({"upload": up.index, "file": up.filename})}
        files = {"image_file": (up.filename, up.data, "application/octet-stream")}
        deadline = time.monotonic() + self.args.upload_deadline
        backoff = 0.1
        for _ in range(500):
            await self.gate.wait()
            self.in_flight += 1
            status, body = None, ""
            try:
                resp = await client.post(UPLOAD_PATH, data=form, files=files)
                status, body = resp.status_code, resp.text
            except httpx.TransportError:
                self.c.conn_errors += 1
            finally:
                self.in_flight -= 1
            if status == 202:
                job_id = json.loads(body)["job_id"]
                self.c.accepted.append((job_id, up.product_id))
                self.c.accepted_at[job_id] = time.monotonic()
                self.c.versions[job_id] = json.loads(body)["version"]
                self.c.shas[job_id] = hashlib.sha256(up.data).hexdigest()
                return job_id
            if status is not None and status not in (429, 503):
                self.fail(f"upload {up.index} ({up.filename}): unexpected HTTP {status}: {body[:200]}")
                return
            self.c.api_503 += status == 503
            if time.monotonic() > deadline:
                self.fail(f"upload {up.index}: no 202 within {self.args.upload_deadline:.0f}s")
                return
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 1.0)
        self.fail(f"upload {up.index}: too many attempts")

    async def version_races(self) -> None:
        """At the release of each portion of uploads (so amid the worker kills and the Redis
        kill), start ``--races`` races on products of their own, then wait for them all."""
        import httpx

        tasks = []
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30, trust_env=False) as client:
            for portion, released in enumerate(self.released):
                await released.wait()
                for k in range(self.args.races):
                    kind = RACES[(portion + k) % len(RACES)]
                    pid = f"race-{self.args.seed}-{portion}-{k}"
                    tasks.append(asyncio.create_task(getattr(self, f"race_{kind}")(client, pid)))
            await asyncio.gather(*tasks)
        log(f"version races done: {self.c.races}")

    def race_photo(self, product_id: str) -> Upload:
        name, data = self.rng.choice(index_photos())
        return Upload(-1, product_id, name, data)

    async def race_retry(self, client, product_id: str) -> None:
        """An undecodable upload fails; its manual retry races a good re-upload of the product.
        The retry is 202 (then the job fails again, or ends superseded) or 409 superseded."""
        bad = await self.upload_one(client, Upload(-1, product_id, BAD_PHOTO.name, BAD_PHOTO.read_bytes()))
        if bad is None:
            return
        self.c.doomed.add(bad)
        if not await self.until_async(lambda: self.job_is(client, bad, "failed"), 60, step=0.2):
            log(f"race: job {bad} did not fail within 60 s; re-uploading anyway")
        await asyncio.gather(self.retry_job(client, bad, self.rng.uniform(0, 0.2)),
                             self.upload_one(client, self.race_photo(product_id)))

    async def race_delete(self, client, product_id: str) -> None:
        """A DELETE while the product's only upload is queued or in progress: it must stay deleted."""
        await self.upload_one(client, self.race_photo(product_id))
        await asyncio.sleep(self.rng.uniform(0, 0.3))
        await self.delete_product(client, product_id, must_find=True)

    async def race_reupload(self, client, product_id: str) -> None:
        """An upload, then a DELETE and a re-upload at once: the newer of the two wins."""
        await self.upload_one(client, self.race_photo(product_id))
        await asyncio.gather(self.delete_product(client, product_id, must_find=True),
                             self.upload_one(client, self.race_photo(product_id)))

    async def job_is(self, client, job_id: str, status: str) -> bool:
        try:
            resp = await client.get(f"/api/v1/queue/status/{job_id}")
        except Exception:
            return False
        return resp.status_code == 200 and resp.json()["status"] == status

    async def race_call(self, client, method: str, path: str, what: str):
        """``method path`` until an answer other than 503/504 or a lost connection (an outage,
        a worker being replaced); None after --upload-deadline. Counts 504s (no answer in time)."""
        import httpx

        deadline, timed_out = time.monotonic() + self.args.upload_deadline, 0
        while time.monotonic() < deadline:
            await self.gate.wait()
            try:
                resp = await client.request(method, path)
            except httpx.TransportError:
                resp = None
            if resp is not None and resp.status_code not in (503, 504):
                return resp, timed_out
            timed_out += resp is not None and resp.status_code == 504
            await asyncio.sleep(0.2 + 0.3 * random.random())
        self.fail(f"{what}: no answer but 503/504 within {self.args.upload_deadline:.0f}s")
        return None, timed_out

    def race_outcome(self, name: str) -> None:
        self.c.races[name] = self.c.races.get(name, 0) + 1

    async def retry_job(self, client, job_id: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)  # sometimes before the re-upload's 202, sometimes after
        resp, _ = await self.race_call(client, "POST", f"/api/v1/queue/retry/{job_id}", f"retry of {job_id}")
        if resp is None:
            return
        code = resp.json().get("error", {}).get("code") if resp.status_code == 409 else None
        if resp.status_code != 202 and code not in ("superseded", "job_not_failed"):
            self.fail(f"retry of {job_id}: HTTP {resp.status_code} {resp.text[:200]}")
        self.race_outcome(f"retry_{code or resp.status_code}")

    async def delete_product(self, client, product_id: str, must_find: bool) -> None:
        """DELETE until answered; with an upload of the product accepted before, only 200 is
        right (or 404 after a 504 whose delete had already happened)."""
        resp, timed_out = await self.race_call(client, "DELETE", f"/api/v1/products/{product_id}",
                                               f"DELETE {product_id}")
        if resp is None:
            return
        if resp.status_code not in (200, 404) or (must_find and resp.status_code == 404 and not timed_out):
            self.fail(f"DELETE {product_id} after an accepted upload: HTTP {resp.status_code} {resp.text[:200]}")
            return
        self.c.deletes.append((product_id, int(resp.json()["version"])))
        self.race_outcome(f"delete_{resp.status_code}")

    def newest(self) -> dict[str, tuple[int, str | None]]:
        """Per product, its newest accepted event by version: (version, job_id of an upload, or
        None for a delete). A 404 DELETE counts too: it came after every upload it did not see."""
        newest: dict[str, tuple[int, str | None]] = {}
        for job_id, pid in self.c.accepted:
            if job_id in self.c.versions and self.c.versions[job_id] > newest.get(pid, (0, None))[0]:
                newest[pid] = (self.c.versions[job_id], job_id)
        for pid, version in self.c.deletes:
            if version > newest.get(pid, (0, None))[0]:
                newest[pid] = (version, None)
        return newest
