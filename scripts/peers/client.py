"""The one load client of the comparison: ``clients`` concurrent uploads of the same JPEGs.

Every system gets the same multipart body that clipq's upload endpoint takes (``product_id``,
``name``, ``image_file``); a peer answers with the vector, clipq answers 202 and is done when the
worker has completed the job. ``upload_all`` returns when every answer has come back, so for
clipq the caller waits for the jobs afterwards (``wait_completed``).
"""
from __future__ import annotations

import asyncio
import time

import aiohttp

UPLOAD_TIMEOUT_S = 600


def form(i: int, tag: str, data: bytes) -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("product_id", f"{tag}-{i:06d}")
    f.add_field("name", f"Bench product {i}")
    f.add_field("image_file", data, filename=f"{i:06d}.jpg", content_type="image/jpeg")
    return f


async def _upload_all(url: str, images: list[bytes], clients: int, tag: str, check) -> list:
    answers: list = [None] * len(images)
    next_index = iter(range(len(images)))
    timeout = aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def one_client() -> None:
            for i in next_index:  # a shared iterator: each image is sent once, by whichever client is free
                async with session.post(url, data=form(i, tag, images[i])) as resp:
                    body = await resp.json(content_type=None)
                    check(resp.status, body)
                    answers[i] = body

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return answers


def upload_all(url: str, images: list[bytes], clients: int, tag: str, check) -> list:
    """POST every image (``clients`` at a time); ``check(status, body)`` raises on a bad answer."""
    return asyncio.run(_upload_all(url, images, clients, tag, check))


async def _get_json(session: aiohttp.ClientSession, url: str):
    async with session.get(url) as resp:
        resp.raise_for_status()
        return await resp.json()


async def _wait_completed(api: str, job_ids: list[str], expected: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:  # a light poll (a few Redis reads per second) while the worker drains the queue
            jobs = (await _get_json(session, f"{api}/api/v1/queue/stats"))["jobs"]
            if jobs.get("completed", 0) + jobs.get("failed", 0) >= expected:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{jobs.get('completed', 0)} of {expected} jobs completed after {timeout_s:.0f}s")
            await asyncio.sleep(0.5)
        statuses = [await _get_json(session, f"{api}/api/v1/queue/status/{j}") for j in job_ids]
    bad = [s for s in statuses if s.get("status") != "completed"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(job_ids)} jobs did not complete; first: {bad[0]}")
    return max(_updated_at_s(s) for s in statuses)


def _updated_at_s(status: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(status["updated_at"].replace("Z", "+00:00")).timestamp()


def wait_completed(api: str, job_ids: list[str], expected: int, timeout_s: float) -> float:
    """Wait until the API counts ``expected`` finished jobs; check every job of ``job_ids`` completed
    and return when the last one did (its ``updated_at``, Redis time, as a Unix timestamp)."""
    return asyncio.run(_wait_completed(api, job_ids, expected, timeout_s))
