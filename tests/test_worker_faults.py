"""Worker runtime faults: a point the store refuses, a stalled batch, a heartbeat hit by a
non-Redis error, a Redis peer that never answers, decode memory, and short error texts."""
from __future__ import annotations

import io
import json
import socket
import threading
import time

import numpy as np
from PIL import Image
from redis.exceptions import RedisClusterException

from batcher.queue.consumer import JobConsumer
from conftest import CORPUS, upload
from test_reliability import claim_as_dead_worker
from test_worker import jpeg


UNREADABLE = "cannot decode image: the file is corrupt, truncated or not a supported image"


def job_hash(r, namespace: str, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall("{%s}:job:%s" % (namespace, job_id)).items()}


def png(size: tuple[int, int], mode: str = "I;16") -> bytes:
    buf = io.BytesIO()
    im = Image.new(mode, size)
    im.putpixel((0, 0), 40000 if mode == "I;16" else 200)
    im.save(buf, "PNG")
    return buf.getvalue()


# -- a point the store refuses fails alone ------------------------------------------------
def test_a_point_the_store_refuses_fails_alone_and_the_rest_complete_first_time(client, run_burst, r, namespace):
    job_ids = [upload(client, None, f"p{i}", data=jpeg(i)).json()["job_id"] for i in range(7)]
    bad = job_ids[3]
    # a NaN is no JSON number: the API refuses it, every engine refuses to store it; pushed straight
    # into Redis, as a bug or an old job could
    r.hset("{%s}:job:%s" % (namespace, bad), "metadata", '{"price": NaN}')
    app, totals = run_burst(max_attempts=2, worker_batch_size=8, worker_max_wait_ms=500)
    for j in job_ids:
        h = job_hash(r, namespace, j)
        if j == bad:
            assert h["status"] == "failed"
            assert h["error_message"] == "vector store refused this product (gave up after 2 attempts)"
        else:
            assert h["status"] == "completed" and h["retry_count"] == "0", h
    assert totals.completed == 6 and totals.failed == 1
    assert app.metrics.registry.get_sample_value("clipq_store_splits_total") >= 1


def test_metadata_nested_deeper_than_the_api_allows_fails_alone_on_its_first_attempt(client, run_burst, r,
                                                                                    namespace):
    """The worker checks the depth itself: what a store accepts must not decide it (a deep payload's
    fate once hung on the interpreter's recursion limit, which torch.compile raises)."""
    job_ids = [upload(client, None, f"p{i}", data=jpeg(i)).json()["job_id"] for i in range(4)]
    deep: dict = {}
    for _ in range(700):
        deep = {"a": deep}
    bad = job_ids[1]
    r.hset("{%s}:job:%s" % (namespace, bad), "metadata", json.dumps(deep))
    _, totals = run_burst(max_attempts=3)
    h = job_hash(r, namespace, bad)
    assert h["status"] == "failed" and h["retry_count"] == "0"
    assert h["error_message"] == "metadata nests 701 levels deep; the limit is 8"
    assert totals.completed == 3 and totals.failed == 1


# -- the stall watchdog ------------------------------------------------------------------
class ModelWith:
    """The real model, with ``embed_images`` replaced by the subclass's."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)


class HangingModel(ModelWith):
    """The real model, except that its first image batch hangs until released (a hung CUDA call)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.entered, self.release = threading.Event(), threading.Event()

    def embed_images(self, images):
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(60)
        return self.inner.embed_images(images)


def test_a_stalled_worker_stops_beating_fails_liveness_exits_and_its_jobs_recover(
        client, start_worker, run_burst, encoder, r, namespace, tmp_path):
    stuck, prefetched = (upload(client, None, f"p{i}", data=jpeg(i)).json()["job_id"] for i in range(2))
    model = HangingModel(encoder)
    app = start_worker(encoder_override=model, worker_batch_size=1, worker_max_wait_ms=0,
                       worker_stall_timeout=1, worker_heartbeat_ttl=2)
    exits, exited = [], threading.Event()
    app.exit = lambda code: (exits.append(code), exited.set())
    runner = threading.Thread(target=app.run, daemon=True)
    runner.start()
    try:
        assert exited.wait(30), "the watchdog never gave up on the stalled batch"
        assert exits == [3] and not app.health.live() and not app.health.ready()
        key = "{%s}:heartbeat:%s" % (namespace, app.settings.worker_id)
        for _ in range(15):  # the heartbeat stays stopped
            assert not r.exists(key)
            time.sleep(0.1)
        assert job_hash(r, namespace, stuck)["started"] == "1"
        assert job_hash(r, namespace, prefetched)["status"] == "processing"  # claimed, never started

        _, totals = run_burst(qdrant_path=str(tmp_path / "q2"))  # another worker reaps, then runs them
        assert totals.completed == 2
        assert job_hash(r, namespace, stuck)["retry_count"] == "1"      # reached the model: charged
        assert job_hash(r, namespace, prefetched)["retry_count"] == "0"  # prefetched only: not charged
    finally:
        model.release.set()
        app.stop.set()
        runner.join(30)


def test_only_jobs_that_reached_the_model_are_charged_when_a_worker_dies(client, worker_settings, r, namespace):
    started = [upload(client, None, f"s{i}", data=jpeg(i)).json()["job_id"] for i in range(2)]
    s = worker_settings()
    claim_as_dead_worker(s, r, "dead-a", 2, started=True)
    waiting = [upload(client, None, f"w{i}", data=jpeg(i)).json()["job_id"] for i in range(2)]
    claim_as_dead_worker(s, r, "dead-b", 2, started=False)
    assert JobConsumer(r, s.queue, "reaper").reap_dead_workers() == {"dead-a": 2, "dead-b": 2}
    assert [job_hash(r, namespace, j)["retry_count"] for j in started] == ["1", "1"]
    assert [job_hash(r, namespace, j).get("retry_count", "0") for j in waiting] == ["0", "0"]
    assert not any("started" in job_hash(r, namespace, j) for j in started)  # cleared on requeue


def test_the_heartbeat_survives_an_error_that_is_not_a_redis_error(worker_settings, r, namespace):
    from batcher.heartbeat import Heartbeat

    calls = []

    def info() -> dict:
        calls.append(1)
        if len(calls) <= 2:  # what a cluster client raises for an uncovered slot
            raise RedisClusterException("slot 1234 is not covered by the cluster")
        return {"ok": True}

    s = worker_settings()
    beat = Heartbeat(JobConsumer(r, s.queue, "hb"), 0.3, info)
    beat.start()
    try:
        deadline = time.monotonic() + 10
        while not r.exists("{%s}:heartbeat:hb" % namespace):
            assert beat.is_alive(), "the heartbeat thread died"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert beat.is_alive() and len(calls) >= 3
    finally:
        beat.stop()


def test_the_workers_redis_client_gives_up_on_a_peer_that_never_answers():
    from batcher.app import StartupError, connect_redis

    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        outcome = []

        def connect():
            try:
                connect_redis(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout_s=0.5)
            except StartupError as exc:
                outcome.append(exc)

        t = threading.Thread(target=connect, daemon=True)
        t.start()
        t.join(15)
        assert not t.is_alive(), "a Redis call hung on a silent peer"
        assert outcome and "cannot reach Redis" in str(outcome[0])


# -- decoding memory ---------------------------------------------------------------------------
def test_decode_cost_counts_bit_depth_and_bands():
    from batcher.decode import decode_cost

    grey16, grey8, rgb = (Image.open(io.BytesIO(png((100, 50), m))) for m in ("I;16", "L", "RGB"))
    assert decode_cost(grey16) == 5000 * (2 * 2 + 3)
    assert decode_cost(grey8) == 5000 * (2 * 1 + 3) and decode_cost(rgb) == 5000 * (2 * 3 + 3)


def test_a_16_bit_image_over_the_decode_memory_fails_alone(client, run_burst, r, namespace):
    big = upload(client, None, "big", data=png((4000, 4000))).json()["job_id"]  # ~16 MP of 16-bit grey
    small16 = upload(client, None, "small16", data=png((200, 150))).json()["job_id"]
    photo = upload(client, None, "photo", data=jpeg(1)).json()["job_id"]
    run_burst(worker_decode_memory=64 << 20)
    h = job_hash(r, namespace, big)
    assert h["status"] == "failed" and h["error_message"] == "image needs 107 MiB to decode, over the limit of 64 MiB"
    assert client.get(f"/api/v1/queue/status/{big}").json()["error_message"] == h["error_message"]
    assert [job_hash(r, namespace, j)["status"] for j in (small16, photo)] == ["completed", "completed"]


def test_large_decodes_wait_for_each_other_within_the_byte_budget():
    from batcher.decode import DecodeBudget

    budget = DecodeBudget(100)
    budget.acquire(60)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (budget.acquire(60), got.set()), daemon=True)
    waiter.start()
    assert not got.wait(0.3), "a second large decode started while the first held the budget"
    budget.release(60)
    assert got.wait(5) and budget.used == 60


def test_16_bit_greyscale_keeps_its_high_byte():
    from batcher.decode import DecodeBudget, open_rgb

    data = png((4, 2))
    rgb = np.asarray(open_rgb(data, 10**6, budget=DecodeBudget(1 << 20)))
    assert rgb.shape == (2, 4, 3) and tuple(rgb[0, 0]) == (40000 >> 8,) * 3 and tuple(rgb[1, 3]) == (0, 0, 0)


# -- short error texts in Redis --------------------------------------------------------------------
class BrokenModel(ModelWith):
    def embed_images(self, images):
        raise RuntimeError("CUDA error: an illegal memory access at /opt/torch/csrc/x.cu:12")


def test_the_worker_stores_short_reasons_and_logs_the_details(client, start_worker, encoder, r, namespace, caplog):
    corrupt = upload(client, CORPUS / "hostile" / "truncated_jpeg.jpg", "corrupt").json()["job_id"]
    broken = upload(client, None, "broken", data=jpeg(2)).json()["job_id"]
    app = start_worker(encoder_override=BrokenModel(encoder), max_attempts=1)
    with caplog.at_level("INFO"):
        app.run(burst=True)
    assert job_hash(r, namespace, corrupt)["error_message"] == UNREADABLE
    assert job_hash(r, namespace, broken)["error_message"] == "inference failed (gave up after 1 attempts)"
    assert "/opt/torch/csrc/x.cu" in caplog.text  # the details are in the log
