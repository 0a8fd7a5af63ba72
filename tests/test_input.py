"""Untrusted input: every bad upload gets a clear 4xx or a failed job, and nothing else breaks."""
from __future__ import annotations

import json

import pytest

from conftest import CORPUS, corpus_rows, job_ids_by_status, upload
from test_worker import jpeg


def is_json_error(resp) -> bool:
    body = resp.json()
    return set(body["error"]) == {"code", "message", "field"} and body["error"]["message"]


def test_every_corpus_file_meets_its_fate_in_one_mixed_batch(client, serve_worker):
    app = serve_worker(worker_batch_size=64, worker_max_wait_ms=2000)
    good = [upload(client, None, f"good-{i}", data=jpeg(i)).json()["job_id"] for i in range(4)]
    fates = {}
    for i, row in enumerate(corpus_rows(extra=True)):
        resp = upload(client, row["path"], f"c-{i}")
        fates[row["file"]] = (row["expect"], resp)
        if resp.status_code != 202:
            assert 400 <= resp.status_code < 500, (row["file"], resp.status_code, resp.text)
            assert is_json_error(resp), resp.text
    queued = {f: resp.json()["job_id"] for f, (_, resp) in fates.items() if resp.status_code == 202}
    import time

    deadline = time.monotonic() + 120
    while True:
        statuses = job_ids_by_status(client, [*queued.values(), *good])
        if set(statuses.values()) <= {"completed", "failed"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {statuses[j] for j in good} == {"completed"}
    for f, (expect, resp) in fates.items():
        if resp.status_code == 202:
            status = client.get(f"/api/v1/queue/status/{queued[f]}").json()
            if expect == "index":
                assert status["status"] == "completed", (f, status)
            elif expect == "reject":
                assert status["status"] == "failed" and status["error_message"], (f, status)
            else:
                assert status["status"] in ("completed", "failed"), (f, status)
        else:
            assert expect in ("reject", "either"), (f, resp.status_code, resp.text)
    thread_alive = any(t.name == "queries" and t.is_alive() for t in __import__("threading").enumerate())
    assert thread_alive and not app.stop.is_set()  # the worker is still serving
    after = upload(client, None, "after", data=jpeg(99)).json()["job_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/api/v1/queue/status/{after}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.parametrize("name, data, status, code", [
    ("text.jpg", b"this is not an image at all", 415, "unsupported_media_type"),
    ("a.gif", (CORPUS / "real" / "hopper.gif").read_bytes(), 415, "unsupported_media_type"),
    ("a.tif", (CORPUS / "hostile" / "crash-0da013a13571cc8eb457a39fee8db18f8a3c7127.tif").read_bytes(), 415,
     "unsupported_media_type"),
    ("empty.jpg", b"", 422, "empty_file"),
    ("head.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, 422, "invalid_image"),
])
def test_type_comes_from_content_not_name(client, name, data, status, code):
    resp = client.post("/api/v1/index-product-with-image", data={"product_id": "p", "name": "n"},
                       files={"image_file": (name, data, "image/jpeg")})
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["field"] == "image_file"


def test_415_names_the_accepted_types(client):
    resp = upload(client, None, "p", data=b"GIF89a....")
    assert all(t in resp.json()["error"]["message"] for t in ("JPEG", "PNG", "WebP"))


def test_oversized_upload_gets_413(make_client):
    client = make_client(max_upload_bytes=20_000)
    big = jpeg(1, (1200, 1000))
    assert len(big) > 20_000
    resp = upload(client, None, "p", data=big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"
    assert upload(client, None, "p", data=jpeg(1)).status_code == 202


def test_oversized_streamed_body_without_length_is_cut_off(make_client):
    client = make_client(max_upload_bytes=20_000)

    def body():
        yield b"--x\r\nContent-Disposition: form-data; name=\"image_file\"; filename=\"a.jpg\"\r\n\r\n"
        for _ in range(1000):
            yield b"\xff" * 1024  # a megabyte, in chunks, with no Content-Length

    resp = client.post("/api/v1/index-product-with-image", content=body(),
                       headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert resp.status_code == 413


def test_too_many_pixels_gets_422_from_the_header_alone(make_client):
    client = make_client(max_image_pixels=10_000)
    resp = upload(client, None, "p", data=jpeg(1, (200, 100)))
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "image_too_large"
    bomb = upload(client, CORPUS / "hostile" / "png_decompression_dos.png", "p2")
    assert 400 <= bomb.status_code < 500 or bomb.status_code == 202


@pytest.mark.parametrize("field, value", [
    ("product_id", ""), ("product_id", "x" * 129), ("product_id", "has space"), ("product_id", "semi;colon"),
    ("product_id", "ünïcode"), ("name", "n" * 513), ("description", "d" * 8193),
    ("metadata", "[1, 2]"), ("metadata", "not json"), ("metadata", json.dumps({"k": "v" * 17000})),
    ("metadata", "42"),
])
def test_bad_fields_get_422_naming_the_field(client, field, value):
    form = {"product_id": "p", "name": "n", "description": "d", field: value}
    resp = client.post("/api/v1/index-product-with-image", data=form,
                       files={"image_file": ("a.jpg", jpeg(1), "image/jpeg")})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


def test_missing_fields_get_422_naming_the_field(client):
    resp = client.post("/api/v1/index-product-with-image", data={"name": "n"},
                       files={"image_file": ("a.jpg", jpeg(1), "image/jpeg")})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "product_id"
    resp = client.post("/api/v1/index-product-with-image", data={"product_id": "p", "name": "n"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "image_file"


def test_limits_at_the_edge_are_accepted(client):
    form = {"product_id": "a" * 128, "name": "n" * 512, "description": "d" * 8192,
            "metadata": json.dumps({"k": "v" * 16000})}
    resp = client.post("/api/v1/index-product-with-image", data=form,
                       files={"image_file": ("a.jpg", jpeg(1), "image/jpeg")})
    assert resp.status_code == 202, resp.text


def test_api_keys_guard_writes_and_searches_but_not_health(make_client):
    client = make_client(api_key="key-one, key-two")
    files = {"image_file": ("a.jpg", jpeg(1), "image/jpeg")}
    form = {"product_id": "p", "name": "n"}
    url = "/api/v1/index-product-with-image"
    assert client.post(url, data=form, files=files).status_code == 401
    wrong = client.post(url, data=form, files=files, headers={"X-API-Key": "key-three"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]  # unknown key: 401
    ok = client.post(url, data=form, files=files, headers={"X-API-Key": "key-two"})
    assert ok.status_code == 202
    job_id = ok.json()["job_id"]
    assert client.post(f"/api/v1/queue/retry/{job_id}").status_code == 401
    assert client.post("/api/v1/search", json={"text": "x"}).status_code == 401
    assert client.post("/api/v1/search/image", files=files).status_code == 401
    assert client.get("/api/v1/products/p").status_code == 401
    assert client.delete("/api/v1/products/p").status_code == 401
    assert client.get("/api/v1/queue/failed").status_code == 401
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(open_path).status_code == 200
    assert client.get(f"/api/v1/queue/status/{job_id}").status_code == 200


def test_unknown_job_ids_reveal_nothing(client):
    resp = client.get("/api/v1/queue/status/job-" + "f" * 32)
    assert resp.status_code == 404 and is_json_error(resp)
    assert client.get("/api/v1/queue/status/../stats").status_code in (404, 200)  # routing, never a leak


def test_cors_is_off_unless_origins_are_listed(make_client):
    headers = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    closed = make_client()
    assert "access-control-allow-origin" not in closed.options("/api/v1/search", headers=headers).headers
    opened = make_client(cors_origins="https://shop.example")
    resp = opened.options("/api/v1/search", headers=headers)
    assert resp.headers["access-control-allow-origin"] == "https://shop.example"


def test_unknown_routes_and_methods_answer_json(client):
    assert is_json_error(client.get("/nope")) and client.get("/nope").status_code == 404
    resp = client.put("/api/v1/queue/stats")
    assert resp.status_code == 405 and is_json_error(resp)


def test_settings_reject_unknown_keys():
    from pydantic import ValidationError

    from api.settings import ApiSettings
    from batcher.settings import WorkerSettings

    with pytest.raises(ValidationError):
        ApiSettings(max_queue_dept=5)
    with pytest.raises(ValidationError):
        WorkerSettings(worker_batch_sise=5)
    with pytest.raises(ValidationError):
        WorkerSettings(worker_batch_size=0)


def test_the_api_process_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, api.main; assert 'torch' not in sys.modules and 'open_clip' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=__import__("conftest").ROOT)
