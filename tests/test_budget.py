"""The byte budget (MAX_QUEUE_BYTES): every image byte the queue holds counts, exactly; uploads
beyond it get 429 while heartbeats, acks and searches go on; failed images go first."""
from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import redis
from PIL import Image

from batcher.queue.calls import Outcome
from batcher.queue.consumer import JobConsumer
from batcher.queue.keys import Keys
from conftest import upload


def noise_png(seed: int, side: int) -> bytes:
    """A decodable PNG of random pixels: about 3 x side x side bytes, whatever the compressor."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def undecodable_png(seed: int, size: int) -> bytes:
    """``size`` bytes: a valid PNG header (passes the API's probe), then data no decoder reads."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1000, 1000, 8, 2, 0, 0, 0))
    tail = chunk(b"IEND", b"")
    junk = np.random.default_rng(seed).bytes(size - len(head) - len(tail) - 12)
    return head + chunk(b"IDAT", b"\x00\x00" + junk[2:]) + tail


def held(r: redis.Redis, k: Keys) -> tuple[int, int]:
    """(the budget's counter, the bytes of the image keys that really exist)."""
    real = sum(r.strlen(key) for key in r.scan_iter(match=k.image("*"), count=1000))
    return int(r.get(k.image_bytes) or 0), real


def wait_status(client, job_id: str, status: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get(f"/api/v1/queue/status/{job_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"{job_id} never became {status}"
        time.sleep(0.05)


def retry(client, job_id: str):
    return client.post(f"/api/v1/queue/retry/{job_id}")


def test_uploads_past_the_budget_get_429_and_completed_jobs_free_their_bytes(make_client, run_burst, r,
                                                                             namespace):
    k, images = Keys(namespace), [noise_png(i, 60) for i in range(4)]
    client = make_client(max_queue_bytes=sum(map(len, images[:3])) + 10)
    for i, data in enumerate(images[:3]):
        assert upload(client, None, f"p{i}", data=data).status_code == 202
    refused = upload(client, None, "p3", data=images[3])
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    error = refused.json()["error"]
    assert error["code"] == "queue_bytes_full" and "MAX_QUEUE_BYTES" in error["message"]
    assert held(r, k) == (sum(map(len, images[:3])),) * 2
    assert client.get("/api/v1/queue/stats").json()["image_bytes"] == sum(map(len, images[:3]))

    _, totals = run_burst()
    assert totals.completed == 3 and held(r, k) == (0, 0)
    assert upload(client, None, "p3", data=images[3]).status_code == 202
    assert held(r, k) == (len(images[3]),) * 2


def test_queued_processing_delayed_and_failed_images_all_count(make_client, worker_settings, r, namespace):
    k, s = Keys(namespace), worker_settings()
    images = [undecodable_png(i, 20_000) for i in range(6)]
    client = make_client(max_queue_bytes=4 * 20_000 + 100)
    ids = [upload(client, None, f"p{i}", data=data).json()["job_id"] for i, data in enumerate(images[:4])]
    worker = JobConsumer(r, s.queue, "w-dies")
    worker.register()
    claimed = worker.take_blocking(1) + worker.take_now(2)
    worker.ack([Outcome(claimed[0], "retry", "store down", delay_ms=600_000),
                Outcome(claimed[1], "failed", "cannot decode image")])
    states = {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in ids}
    assert states == {"queued", "processing", "failed"} and r.zcard(k.delayed) == 1
    assert held(r, k) == (4 * 20_000,) * 2

    # an image larger than the whole budget drops nothing for its sake
    assert upload(client, None, "huge", data=undecodable_png(9, 90_000)).status_code == 429
    assert r.zcard(k.failed_images) == 1
    # room for a fifth: the failed job's image goes, never a live one
    assert upload(client, None, "p4", data=images[4]).status_code == 202
    assert held(r, k) == (4 * 20_000,) * 2
    expired = retry(client, claimed[1])
    assert expired.status_code == 409 and expired.json()["error"]["code"] == "image_expired"
    assert upload(client, None, "p5", data=images[5]).status_code == 429

    # the reaper moves the dead worker's job back to the queue: its bytes stay counted once
    assert JobConsumer(r, s.queue, "reaper").reap_dead_workers() == {"w-dies": 1}
    assert held(r, k) == (4 * 20_000,) * 2


def test_a_failed_image_past_its_ttl_is_dropped_and_counted_out(make_client, run_burst, serve_worker, r,
                                                                 namespace):
    k = Keys(namespace)
    client = make_client()
    job_id = upload(client, None, "bad", data=undecodable_png(0, 30_000)).json()["job_id"]
    run_burst()
    assert client.get(f"/api/v1/queue/status/{job_id}").json()["status"] == "failed"
    assert held(r, k) == (30_000, 30_000) and r.ttl(k.image(job_id)) == -1  # no TTL: we drop it
    serve_worker(failed_image_ttl=1, worker_reaper_interval=0.2)  # its housekeeping drops it
    deadline = time.monotonic() + 15
    while held(r, k) != (0, 0):
        assert time.monotonic() < deadline, f"the failed image was not dropped: {held(r, k)}"
        time.sleep(0.1)
    assert r.zcard(k.failed_images) == 0
    assert retry(client, job_id).json()["error"]["code"] == "image_expired"


def test_an_upload_drops_failed_images_past_their_ttl_on_its_way(make_client, run_burst, r, namespace):
    k = Keys(namespace)
    client = make_client(failed_image_ttl=1)
    job_id = upload(client, None, "bad", data=undecodable_png(0, 30_000)).json()["job_id"]
    run_burst()  # the worker keeps failed images a day: only the upload can drop this one
    assert held(r, k) == (30_000, 30_000)
    time.sleep(1.2)
    assert upload(client, None, "good", data=noise_png(1, 20)).status_code == 202
    assert held(r, k) == (len(noise_png(1, 20)),) * 2
    assert retry(client, job_id).json()["error"]["code"] == "image_expired"


def test_a_stream_of_undecodable_large_files_cannot_fill_redis(make_client, serve_worker, r, namespace):
    """Files that pass the header check and fail to decode end up failed; under the budget
    their images are dropped oldest first and the counter stays exact."""
    k, size, kept = Keys(namespace), 200_000, 5
    client = make_client(max_queue_bytes=kept * size + size // 2)
    serve_worker()
    ids = []
    for i in range(3 * kept):
        resp = upload(client, None, f"bad{i}", data=undecodable_png(i, size))
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["job_id"])
        wait_status(client, ids[-1], "failed")
        assert held(r, k)[0] == held(r, k)[1] <= kept * size + size // 2
    assert held(r, k) == (kept * size,) * 2
    assert [m.decode() for m in r.zrange(k.failed_images, 0, -1)] == ids[-kept:]
    assert client.get("/api/v1/queue/stats").json()["jobs"]["failed"] == 3 * kept
    for job_id in ids[:-kept]:
        assert retry(client, job_id).json()["error"]["code"] == "image_expired"
    assert retry(client, ids[-1]).status_code == 202


class GatedEncoder:
    """The real encoder whose image batches wait for ``gate`` once ``armed``: holds a batch."""

    def __init__(self, inner) -> None:
        self.inner, self.armed, self.gate = inner, False, threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_images(self, images):
        if self.armed:
            self.gate.wait(60)
        return self.inner.embed_images(images)


def test_uploads_are_refused_long_before_redis_is_full_and_workers_and_search_go_on(
        tmp_path, make_client, start_worker, encoder, namespace):
    """A real Redis with a small maxmemory and noeviction, the budget sized as deploy/README.md
    says: uploads get 429 (never 503), while a worker's heartbeat, its ack and a search still work."""
    from scripts.lib.redis_server import LocalRedis

    server = LocalRedis(tmp_path / "small-redis", aof=False, maxmemory="16mb").start()
    small, k = redis.Redis.from_url(server.url), Keys(namespace)
    client = make_client(redis_url=server.url, max_queue_bytes=6 * 1024**2)
    gated = GatedEncoder(encoder)
    app = start_worker(encoder_override=gated, redis_url=server.url, worker_batch_size=1)
    gated.armed = True
    thread = threading.Thread(target=app.run, daemon=True)
    try:
        codes = []
        while not codes or codes[-1] == 202:
            assert len(codes) < 100, "the budget never refused an upload"
            codes.append(upload(client, None, f"p{len(codes)}", data=noise_png(len(codes), 300)).status_code)
        assert codes[-1] == 429 and set(codes[:-1]) == {202}
        memory = small.info("memory")
        assert memory["used_memory"] < memory["maxmemory"] * 0.75, memory["used_memory"]

        thread.start()
        deadline = time.monotonic() + 30
        while not client.get("/api/v1/workers").json()["workers"]:  # its heartbeat is written
            assert time.monotonic() < deadline, "the worker's heartbeat never appeared"
            time.sleep(0.05)
        assert upload(client, None, "late", data=noise_png(999, 300)).status_code == 429
        search = client.post("/api/v1/search", json={"text": "a red cup", "limit": 3})
        assert search.status_code == 200, search.text
        gated.gate.set()  # the held batch goes on: its ack frees its image
        while client.get("/api/v1/queue/stats").json()["jobs"]["completed"] < 1:
            assert time.monotonic() < deadline, "no job was acknowledged"
            time.sleep(0.05)
        app.stop.set()  # the counter and the keys are compared at rest
        thread.join(30)
        counted, real = held(small, k)
        assert counted == real < 6 * 1024**2
    finally:
        gated.gate.set()
        app.stop.set()
        if thread.is_alive():
            thread.join(30)
        small.close()
        server.stop()
