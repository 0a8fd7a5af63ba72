"""Hostile and unlucky requests at the API's door: each gets a short 4xx, never a 5xx, a hang or
a dead worker lane; and the API does not start open to the world by accident."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import zlib

import httpx
import pytest
from PIL import Image

from conftest import ROOT, served, upload
from test_search import search_image, wait_completed
from test_worker import jpeg

PILLOW_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (and holds none)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def refused(resp, status: int, field: str | None) -> bool:
    body = resp.json()
    return resp.status_code == status and body["error"]["field"] == field and body["error"]["message"]


# -- filters ----------------------------------------------------------------------------------
HOSTILE_FILTERS = [
    {"price": 1.5}, {"price": 2.0}, {"price": float("nan")}, {"": "x"}, {"k" * 65: "x"},
    {f"k{i}": i for i in range(17)}, {"a": None}, {"a": {"b": 1}}, {"a": [1]}, {"a": 2**63},
    {"a[]": "x"}, {'a"b': "x"}, {".a": "x"}, {"a..b": "x"}, {"a b": "x"}, {"a:b": "x"}, {"a$": "x"},
    {"a": "v" * 1025},
]


def test_filters_are_checked_at_the_door_and_the_lane_keeps_answering(client, serve_worker):
    serve_worker()
    meta = {"colour": "red", "size": 3, "sale": True, "price": 1.5}
    done = upload(client, None, "sku-1", data=jpeg(1), metadata=json.dumps(meta)).json()["job_id"]
    wait_completed(client, [done])
    for bad in HOSTILE_FILTERS:
        text = client.post("/api/v1/search", content=json.dumps({"text": "x", "filter": bad}),
                           headers={"Content-Type": "application/json"})
        assert refused(text, 422, "filter"), (bad, text.status_code, text.text)
        image = search_image(client, jpeg(2), filter=json.dumps(bad))
        assert refused(image, 422, "filter"), (bad, image.status_code, image.text)
    assert "float" in client.post("/api/v1/search", json={"text": "x", "filter": {"price": 1.5}}).text
    for good in ({"colour": "red"}, {"size": 3}, {"sale": True}, {"product_id": "sku-1", "size": 3}):
        resp = client.post("/api/v1/search", json={"text": "x", "filter": good})
        assert resp.status_code == 200 and [h["product_id"] for h in resp.json()["results"]] == ["sku-1"], good
    for miss in ({"size": 4}, {"sale": False}, {"a.b": "c"}):
        assert client.post("/api/v1/search", json={"text": "x", "filter": miss}).json()["results"] == []


# -- metadata ---------------------------------------------------------------------------------
def nested(depth: int) -> str:
    return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [9, 8000])
def test_deep_metadata_gets_422_naming_metadata(client, depth):
    resp = upload(client, None, "p", data=jpeg(1), metadata=nested(depth))
    assert refused(resp, 422, "metadata"), resp.text
    assert upload(client, None, "p", data=jpeg(1), metadata=nested(8)).status_code == 202


def test_metadata_with_non_finite_numbers_gets_422(client):
    resp = upload(client, None, "p", data=jpeg(1), metadata='{"price": NaN}')
    assert refused(resp, 422, "metadata"), resp.text


# -- images the API cannot probe ---------------------------------------------------------------
@pytest.mark.parametrize("width, height", [(100_000, 100_000), (2**31 - 1, 2**31 - 1)])
def test_a_header_claiming_billions_of_pixels_gets_422(client, width, height, monkeypatch):
    # Pillow's own bomb limit, as in the API's process (the worker's decoder, imported by
    # other tests in this one, turns it off)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_DEFAULT_MAX_PIXELS)
    bomb = png_header(width, height)
    resp = upload(client, None, "p", data=bomb)
    assert refused(resp, 422, "image_file") and resp.json()["error"]["code"] in ("image_too_large", "invalid_image")
    resp = search_image(client, bomb)
    assert refused(resp, 422, "image_file"), resp.text


# -- a read deadline on request bodies -----------------------------------------------------------
@pytest.fixture
def live_api(api_settings):
    from api.main import create_app

    with served(create_app(api_settings.model_copy(update={"upload_read_timeout": 1.0}))) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def test_a_trickling_upload_gets_408_and_a_brisk_one_is_accepted(live_api):
    host, port = live_api
    with socket.create_connection((host, port), timeout=15) as sock:
        sock.sendall(b"POST /api/v1/index-product-with-image HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")
        answer = b""
        for _ in range(40):  # a byte every 0.25 s: far past the 1 s deadline unless cut off
            try:
                sock.sendall(b"x")
            except OSError:
                break
            sock.settimeout(0.25)
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:  # closed with our unread bytes in its buffer: a reset
                break
            if b"\r\n\r\n" in answer:
                break
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):  # the server closes the connection after its answer
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    resp = upload(httpx.Client(base_url=f"http://{host}:{port}"), None, "p", data=jpeg(1))
    assert resp.status_code == 202, resp.text


# -- public error messages ----------------------------------------------------------------------
DECODE_REASON = "cannot decode image: the file is corrupt, truncated or not a supported image"


def test_failed_jobs_show_short_reasons_not_raw_exception_text(client, start_worker):
    from qdrant_client import QdrantClient

    from batcher.store.server import ServerStore

    whole = jpeg(3, (400, 300))
    corrupt = upload(client, None, "corrupt", data=whole[: len(whole) // 2]).json()["job_id"]
    app = start_worker(max_attempts=1)
    totals = app.run(burst=True)
    assert totals.failed == 1
    status = client.get(f"/api/v1/queue/status/{corrupt}").json()
    assert status["status"] == "failed" and status["error_message"] == DECODE_REASON

    unreachable = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    app = start_worker(max_attempts=2)
    dead = ServerStore(QdrantClient(url="http://127.0.0.1:9", timeout=1), "products", app.store.dim)
    app.store.upsert = dead.upsert
    assert app.run(burst=True).failed == 1
    status = client.get(f"/api/v1/queue/status/{unreachable}").json()
    assert status["error_message"] == "vector store unavailable (gave up after 2 attempts)"
    listed = {j["job_id"]: j["error_message"] for j in client.get("/api/v1/queue/failed").json()["jobs"]}
    assert listed == {corrupt: DECODE_REASON, unreachable: status["error_message"]}


def test_query_errors_from_a_worker_are_short_reasons(client, serve_worker):
    app = serve_worker()
    whole = jpeg(4, (400, 300))
    resp = search_image(client, whole[: len(whole) // 2])  # passes the header probe, fails to decode
    assert refused(resp, 422, None) and resp.json()["error"]["code"] == "invalid_image"
    assert resp.json()["error"]["message"] == DECODE_REASON

    def broken_get(product_id):
        raise RuntimeError("qdrant at http://10.0.0.7:6333 said no")

    app.store.get = broken_get
    resp = client.get("/api/v1/products/sku-1")
    assert resp.status_code == 500 and "RuntimeError" not in resp.text and "10.0.0.7" not in resp.text


def test_short_reasons_keep_our_words_and_drop_internal_text():
    from api.reasons import GENERIC, short_reason

    kept = ["image is 9000x9000, over the limit of 40000000 pixels", "image has no pixels (0x5)",
            "worker died while processing this job (3 attempts)",
            "cannot decode image: not a readable JPEG, PNG or WebP file"]
    for message in kept:
        assert short_reason(message) == message
    assert short_reason("inference failed: RuntimeError: CUDA error at /opt/torch/x.cu:12 (gave up after 3 attempts)") \
        == "inference failed (gave up after 3 attempts)"
    assert short_reason("device out of memory even for one image: 3.2 GiB on cuda:0") == \
        "device out of memory even for one image"
    assert short_reason("Traceback: secret at redis://:pw@host") == GENERIC
    assert short_reason("") is None and short_reason(None) is None


# -- secure by default --------------------------------------------------------------------------
def test_the_api_refuses_to_start_without_a_key_unless_anonymous_on_purpose(settings_kw):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import ApiSettings

    for refused_settings in ({}, {"api_key": "CHANGE-ME"}, {"api_key": "good-key, change-me-api-key"}):
        with pytest.raises(RuntimeError, match="API_KEY"):
            with TestClient(create_app(ApiSettings(**settings_kw | refused_settings))):
                pass
    for accepted in ({"allow_anonymous": True}, {"api_key": "a-real-key"}):
        with TestClient(create_app(ApiSettings(**settings_kw | accepted))) as client:
            assert client.get("/healthz").status_code == 200


def test_uvicorn_exits_with_a_clear_reason_when_no_key_is_set(redis_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "ALLOW_"))}
    env |= {"REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "ALLOW_ANONYMOUS=true" in proc.stdout + proc.stderr
