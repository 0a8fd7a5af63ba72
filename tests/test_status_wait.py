"""Waiting without polling: ``GET /api/v1/queue/status/{id}?wait=SECONDS`` over real HTTP."""
from __future__ import annotations

import threading
import time

import httpx

from conftest import served, upload
from test_worker import jpeg


def status_in_thread(url: str, job_id: str, wait: float) -> dict:
    """Start a long-poll in a thread; the dict gets ``body`` and ``returned_at`` when it answers."""
    out: dict = {}

    def call() -> None:
        resp = httpx.get(f"{url}/api/v1/queue/status/{job_id}", params={"wait": wait}, timeout=wait + 30)
        out.update(code=resp.status_code, body=resp.json(), returned_at=time.monotonic())

    out["thread"] = threading.Thread(target=call, daemon=True)
    out["thread"].start()
    return out


def test_a_waiting_status_answers_when_the_job_completes_not_at_the_end_of_the_wait(
        client, api_settings, serve_worker):
    from api.main import create_app

    job_id = upload(client, None, "p1", data=jpeg(1)).json()["job_id"]
    with served(create_app(api_settings)) as url:
        poll = status_in_thread(url, job_id, 25)
        time.sleep(1.0)
        assert "body" not in poll  # no worker yet: still waiting
        started = time.monotonic()
        serve_worker()
        poll["thread"].join(30)
        assert poll["code"] == 200 and poll["body"]["status"] == "completed", poll
        assert poll["returned_at"] - started < 20  # answered on completion, not after the 25 s wait


def test_the_workers_announcement_wakes_the_wait_before_its_own_reread(client, api_settings, serve_worker):
    """With the sweep every 60 s (after its first, at 1 s), only the announcement can answer within the wait."""
    from api.main import create_app

    app = create_app(api_settings)
    job_id = upload(client, None, "p2", data=jpeg(2)).json()["job_id"]
    with served(app) as url:
        app.state.waiter.poll_s = 60.0
        poll = status_in_thread(url, job_id, 25)
        time.sleep(0.5)
        started = time.monotonic()
        serve_worker()
        poll["thread"].join(30)
        assert poll["body"]["status"] == "completed", poll
        assert poll["returned_at"] - started < 20  # woken, not by the re-read at the wait's end


def test_a_wait_that_ends_answers_with_the_current_status(client):
    job_id = upload(client, None, "p3", data=jpeg(3)).json()["job_id"]
    t0 = time.monotonic()
    resp = client.get(f"/api/v1/queue/status/{job_id}", params={"wait": 1})
    assert resp.status_code == 200 and resp.json()["status"] == "queued"
    assert time.monotonic() - t0 >= 1.0


def test_wait_is_bounded_and_unknown_jobs_answer_404_at_once(client):
    resp = client.get("/api/v1/queue/status/job-00000000000000000000000000000000", params={"wait": 30})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "job_not_found"
    for bad in ("31", "-1", "soon"):
        resp = client.get("/api/v1/queue/status/job-x", params={"wait": bad})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "wait", resp.text


def test_a_burst_of_waits_beyond_the_redis_pool_queues_for_a_connection_and_none_is_refused(client, settings_kw):
    """60 long-polls at once on an API with 2 Redis connections: every one answers 200."""
    import asyncio

    from api.main import create_app
    from api.settings import ApiSettings

    job_id = upload(client, None, "p5", data=jpeg(5)).json()["job_id"]
    app = create_app(ApiSettings(**settings_kw, allow_anonymous=True, redis_max_connections=2))

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as http:
            return await asyncio.gather(*(http.get(f"{url}/api/v1/queue/status/{job_id}", params={"wait": 1.5})
                                          for _ in range(60)))

    with served(app) as url:
        answers = asyncio.run(burst(url))
    assert [a.status_code for a in answers] == [200] * 60, {a.status_code: a.text for a in answers}
    assert {a.json()["status"] for a in answers} == {"queued"}  # no worker: the waits ran out


def test_a_wait_is_answered_by_the_sweep_when_no_announcement_comes(client, api_settings, r, namespace):
    """The job's record goes away (as when it expires): no worker announces anything, and the
    periodic sweep of the waiting ids answers the wait with 404 long before it ends."""
    from api.main import create_app
    from batcher.queue.keys import Keys

    job_id = upload(client, None, "p6", data=jpeg(6)).json()["job_id"]
    with served(create_app(api_settings)) as url:
        poll = status_in_thread(url, job_id, 25)
        time.sleep(0.5)
        assert "body" not in poll
        started = time.monotonic()
        r.delete(Keys(namespace).job(job_id))
        poll["thread"].join(30)
        assert poll["code"] == 404 and poll["body"]["error"]["code"] == "job_not_found", poll
        assert poll["returned_at"] - started < 20  # the sweep (every second), not the end of the wait
