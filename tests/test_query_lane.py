"""The query lane never dies: hostile requests get error replies, the rest of their round is
answered, requests whose client gave up are dropped, the lane's backlog is bounded, and a lane
that cannot run takes its worker out of the API's count and its readiness probe down."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import redis

from batcher.queue.messages import QueryReply, QueryRequest
from conftest import upload
from test_search import wait_completed
from test_worker import jpeg


def push_raw(r, namespace: str, *bodies: dict | str) -> None:
    """Put requests straight onto the lane, bypassing the API's checks, in one RPUSH."""
    r.rpush("{%s}:requests" % namespace, *[b if isinstance(b, str) else json.dumps(b) for b in bodies])


def raw_text(text: str = "a photo", **fields) -> dict:
    return json.loads(QueryRequest("text", text=text).to_json()) | fields


def reply_of(r, namespace: str, request_id: str, timeout_s: float = 20) -> QueryReply | None:
    got = r.blpop(["{%s}:reply:%s" % (namespace, request_id)], timeout=timeout_s)
    return None if got is None else QueryReply.from_json(got[1])


@pytest.fixture
def lane(client, serve_worker):
    """A serving worker with one indexed product."""
    app = serve_worker()
    wait_completed(client, [upload(client, None, "p1", data=jpeg(1), metadata='{"colour": "red"}').json()["job_id"]])
    return app


def test_a_search_the_store_cannot_run_gets_an_error_and_the_lane_keeps_answering(client, lane, r, namespace):
    hostile = [raw_text(filter={"price": 1.5}),      # a float: Qdrant's MatchValue refuses it
               raw_text(filter={"": "x"}), raw_text(filter={"k" * 5000: 1}),
               raw_text(limit="ten"), raw_text(filter=[1, 2])]
    good = raw_text(filter={"colour": "red"})
    push_raw(r, namespace, *hostile, good, "not json", '{"kind": 3}')
    answer = reply_of(r, namespace, good["id"])
    assert answer is not None and answer.ok and [x.product_id for x in answer.results] == ["p1"]
    for bad in hostile:
        reply = reply_of(r, namespace, bad["id"])
        assert reply is not None, f"no reply to {bad['filter']!r}, limit {bad['limit']!r}"
        if not reply.ok:  # an error reply, short, with no exception class or text in it
            assert reply.status == 500 and reply.message == "a worker failed to answer this query"
    for _ in range(3):  # the lane still answers, through the API
        resp = client.post("/api/v1/search", json={"text": "red", "filter": {"colour": "red"}})
        assert resp.status_code == 200 and resp.json()["results"][0]["product_id"] == "p1"
    doc = json.loads(r.get("{%s}:heartbeat:%s" % (namespace, lane.settings.worker_id)))
    assert doc["query_lane_alive"] is True


def test_a_request_whose_client_gave_up_is_dropped(client, lane, r, namespace):
    sec, _ = r.time()
    late, timely = raw_text(deadline_ms=(sec - 1) * 1000), raw_text(deadline_ms=(sec + 60) * 1000)
    push_raw(r, namespace, late, timely)
    assert reply_of(r, namespace, timely["id"]).ok
    assert reply_of(r, namespace, late["id"], timeout_s=1) is None
    assert lane.metrics.registry.get_sample_value("clipq_queries_expired_total") == 1


def test_the_api_gives_each_request_its_deadline(make_client, r, namespace):
    client = make_client(search_timeout=0.3)
    r.sadd("{%s}:workers" % namespace, "zombie")
    r.set("{%s}:heartbeat:zombie" % namespace, "{}", px=10_000)
    assert client.post("/api/v1/search", json={"text": "x"}).status_code == 504
    (queued,) = r.lrange("{%s}:requests" % namespace, 0, -1)
    request = QueryRequest.from_json(queued)
    sec, usec = r.time()
    assert request.text == "x" and 0 < (sec * 1000 + usec // 1000) - request.deadline_ms < 5000


def test_a_full_lane_answers_503_with_retry_after(make_client, r, namespace):
    client = make_client(max_pending_queries=2, search_timeout=0.3)
    r.sadd("{%s}:workers" % namespace, "zombie")  # alive, but answers nothing: the lane fills
    r.set("{%s}:heartbeat:zombie" % namespace, "{}", px=10_000)
    assert [client.post("/api/v1/search", json={"text": "x"}).status_code for _ in range(2)] == [504, 504]
    resp = client.post("/api/v1/search", json={"text": "x"})
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "search_busy"
    assert int(resp.headers["Retry-After"]) >= 1
    assert r.llen("{%s}:requests" % namespace) == 2


def searches_over_http(settings_kw, count: int, stagger_s: float = 0.0, **overrides) -> list[tuple[int, float]]:
    """``count`` searches sent at once (or ``stagger_s`` apart) to the API served by uvicorn:
    each one's status code and seconds taken."""
    import asyncio

    import httpx

    from api.main import create_app
    from api.settings import ApiSettings
    from conftest import served

    async def one(http, i: int) -> tuple[int, float]:
        await asyncio.sleep(stagger_s * i)
        t0 = time.monotonic()
        reply = await http.post("/api/v1/search", json={"text": f"q{i}"})
        return reply.status_code, time.monotonic() - t0

    async def all_of_them(url: str) -> list[tuple[int, float]]:
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=count)) as http:
            return await asyncio.gather(*(one(http, i) for i in range(count)))

    with served(create_app(ApiSettings(**settings_kw, allow_anonymous=True, **overrides))) as url:
        return asyncio.run(all_of_them(url))


def register_silent_worker(r, namespace: str, name: str) -> None:
    """A worker the API counts as alive, whose query lane answers nothing."""
    r.sadd("{%s}:workers" % namespace, name)
    r.set("{%s}:heartbeat:%s" % (namespace, name), "{}", px=30_000)


def test_150_searches_waiting_at_once_each_wait_their_time_none_refused(settings_kw, r, namespace):
    """Each waiting search holds a Redis connection (BLPOP on its reply). redis-py's default pool
    has 100: the 101st waiting search failed at once with 503 redis_unavailable."""
    register_silent_worker(r, namespace, "zombie")
    codes = [code for code, _ in searches_over_http(settings_kw, 150, search_timeout=2)]
    assert codes == [504] * 150, {code: codes.count(code) for code in set(codes)}
    assert r.llen("{%s}:requests" % namespace) == 150  # every one reached the lane


def test_searches_past_the_connection_pool_still_end_within_their_time_out(settings_kw, r, namespace):
    """A worker takes every search off the lane and never answers, so the lane never fills and
    more searches wait than MAX_PENDING_QUERIES connections: those beyond wait for a connection,
    and the whole wait stays within SEARCH_TIMEOUT (504), not twice it, nor a 503."""
    import threading

    register_silent_worker(r, namespace, "taker")
    stop, taken = threading.Event(), []

    def take() -> None:
        while not stop.is_set():
            if got := r.blpop(["{%s}:requests" % namespace], timeout=0.1):
                taken.append(got)

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    try:  # one at a time onto the lane, which the taker empties at once
        results = searches_over_http(settings_kw, 6, stagger_s=0.05, max_pending_queries=2, search_timeout=2)
    finally:
        stop.set()
        taker.join(5)
    assert [code for code, _ in results] == [504] * 6, results
    # the time-out (2 s) plus a second of slack for a loaded machine; twice the time-out would be 4 s
    assert len(taken) == 6 and max(s for _, s in results) < 2 + 1, results


def test_a_worker_whose_lane_is_down_is_not_counted(make_client, r, namespace):
    client = make_client(search_timeout=3)
    r.sadd("{%s}:workers" % namespace, "deaf")
    r.set("{%s}:heartbeat:deaf" % namespace, json.dumps({"query_lane_alive": False}), px=10_000)
    t0 = time.monotonic()
    resp = client.post("/api/v1/search", json={"text": "x"})
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "no_worker"
    assert time.monotonic() - t0 < 2  # refused at once, not after the search timeout


def test_a_lane_that_cannot_run_takes_readiness_down(client, lane, r, namespace):
    from batcher.probes import serve_probes
    from scripts.lib.procs import free_port

    port = free_port()
    server = serve_probes(port, lane.metrics.registry, lane.health, host="127.0.0.1")

    def probe(path: str) -> int:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        assert probe("/readyz") == 200 and probe("/livez") == 200 and probe("/metrics") == 200
        queries = lane.health.lane_ok.__self__
        queries.redis = redis.Redis(port=free_port(), socket_connect_timeout=0.5)  # nobody listens there
        deadline = time.monotonic() + 30
        while probe("/readyz") != 503:
            assert time.monotonic() < deadline, "the lane failed for good yet the worker stays ready"
            time.sleep(0.1)
        assert probe("/livez") == 200  # not stalled: no restart for a lane waiting on Redis
        key = "{%s}:heartbeat:%s" % (namespace, lane.settings.worker_id)
        while json.loads(r.get(key))["query_lane_alive"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        resp = client.post("/api/v1/search", json={"text": "x"})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "no_worker"
    finally:
        server.shutdown()
