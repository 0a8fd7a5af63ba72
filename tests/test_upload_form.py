"""The upload's form, byte by byte: odd bodies get the same 4xx shapes as ever, through the real
app and a real Redis. Written against FastAPI's own form parsing, before the upload read its
form itself (api/forms.py): every case here held then and must hold now."""
from __future__ import annotations

import hashlib
import socket

import pytest
from fastapi.testclient import TestClient

from test_worker import jpeg

ROUTE = "/api/v1/index-product-with-image"
JPEG = jpeg(1)
MP = {"Content-Type": "multipart/form-data; boundary=B"}


def part(name: str, value: bytes, filename: str | None = None, disposition: bytes | None = None) -> bytes:
    head = disposition or f'Content-Disposition: form-data; name="{name}"'.encode() + (
        f'; filename="{filename}"\r\nContent-Type: image/jpeg'.encode() if filename is not None else b"")
    return b"--B\r\n" + head + b"\r\n\r\n" + value + b"\r\n"


def form(*parts: bytes, end: bytes = b"--B--\r\n") -> bytes:
    return b"".join(parts) + end


PID, NAME, IMAGE = part("product_id", b"p1"), part("name", b"n"), part("image_file", JPEG, "a.jpg")
NOT_IMAGE = part("image_file", b"not an image", "b.jpg")

REFUSED = [  # (case, body, headers, status, code, field, message or None)
    ("the last of two image parts is the one read", form(PID, NAME, IMAGE, NOT_IMAGE), MP,
     415, "unsupported_media_type", "image_file", None),
    ("an image part without a filename is a text field", form(PID, NAME, part("image_file", b"hello")), MP,
     422, "invalid_field", "image_file", "image_file: Value error, Expected UploadFile, received: <class 'str'>"),
    ("an empty text image part counts as missing", form(PID, NAME, part("image_file", b"")), MP,
     422, "missing_field", "image_file", None),
    ("a browser's empty file input counts as missing", form(PID, NAME, part("image_file", b"", "")), MP,
     422, "missing_field", "image_file", None),
    ("an empty file with a name is an empty image", form(PID, NAME, part("image_file", b"", "a.jpg")), MP,
     422, "empty_file", "image_file", None),
    ("a text field sent as a file", form(part("product_id", b"p1", "p.txt"), NAME, IMAGE), MP,
     422, "invalid_field", "product_id", "product_id: Input should be a valid string"),
    ("an empty product_id counts as missing", form(part("product_id", b""), NAME, IMAGE), MP,
     422, "invalid_field", "product_id", "product_id: Field required"),
    ("a missing name", form(PID, IMAGE), MP, 422, "invalid_field", "name", "name: Field required"),
    ("the first missing field is named", form(IMAGE), MP, 422, "invalid_field", "product_id", None),
    ("filename* is no filename", form(PID, NAME, part("image_file", JPEG, disposition=(
        b"Content-Disposition: form-data; name=\"image_file\"; filename*=UTF-8''caf%C3%A9.jpg"))), MP,
     422, "invalid_field", "image_file", None),
    ("an image part cut off before its boundary is missing", PID + NAME + IMAGE[:-500], MP,
     422, "missing_field", "image_file", None),
    ("a body without its closing boundary", PID + NAME + IMAGE, MP, 422, "missing_field", "image_file", None),
    ("both a file and a URL", form(PID, NAME, part("image_url", b"https://example.com/a.jpg"), IMAGE), MP,
     422, "invalid_field", "image_url", "give image_file or image_url, not both"),
    ("no boundary", form(PID, NAME, IMAGE), {"Content-Type": "multipart/form-data"},
     400, "bad_request", None, "Missing boundary in multipart."),
    ("an empty boundary", form(PID, NAME, IMAGE), {"Content-Type": "multipart/form-data; boundary="},
     400, "bad_request", None, "Invalid multipart data."),
    ("not multipart at all", b"hello, this is not multipart", MP, 400, "bad_request", None, "Invalid multipart data."),
    ("a preamble before the first boundary", b"preamble\r\n" + form(PID, NAME, IMAGE), MP,
     400, "bad_request", None, "Invalid multipart data."),
    ("bare LF line ends", form(PID, NAME, IMAGE).replace(b"\r\n", b"\n"), MP,
     400, "bad_request", None, "Invalid multipart data."),
    ("a part without a name", form(part("x", b"x", disposition=b"Content-Disposition: form-data"), PID, NAME, IMAGE),
     MP, 400, "bad_request", None, 'The Content-Disposition header field "name" must be provided.'),
    ("a part without Content-Disposition", form(part("x", b"x", disposition=b"Content-Type: text/plain"), PID, IMAGE),
     MP, 400, "bad_request", None, 'The Content-Disposition header field "name" must be provided.'),
    ("a text part over 1 MB", form(PID, NAME, part("description", b"d" * (1024 * 1024 + 1)), IMAGE), MP,
     400, "bad_request", None, "Part exceeded maximum size of 1024KB."),
    ("a JSON body", b'{"product_id": "p", "name": "n"}', {"Content-Type": "application/json"},
     422, "invalid_field", "product_id", "product_id: Field required"),
    ("no Content-Type", b"abc", {}, 422, "invalid_field", "product_id", "product_id: Field required"),
]


@pytest.mark.parametrize("case, body, headers, status, code, field, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_odd_forms_get_the_same_4xx(client, case, body, headers, status, code, field, message):
    resp = client.post(ROUTE, content=body, headers=headers)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert resp.json() == {"error": {"code": code, "field": field, "message": message or error["message"]}}
    assert resp.json()["error"]["message"]


def stored(r, client, resp) -> dict[str, str]:
    assert resp.status_code == 202, resp.text
    key = f"{{{client.app.state.settings.queue_namespace}}}:job:{resp.json()['job_id']}"
    return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


ACCEPTED = [  # (case, body, headers, what the job record holds)
    ("the last of two image parts is the one read", form(PID, NAME, NOT_IMAGE, IMAGE), MP, {}),
    ("the last of two text fields wins", form(part("product_id", b"first"), PID, NAME, IMAGE), MP, {}),
    ("upper-case media type", form(PID, NAME, IMAGE), {"Content-Type": "MULTIPART/FORM-DATA; boundary=B"}, {}),
    ("quoted boundary", form(PID, NAME, IMAGE), {"Content-Type": 'multipart/form-data; boundary="B"'}, {}),
    ("an epilogue after the closing boundary", form(PID, NAME, IMAGE) + b"epilogue", MP, {}),
    ("unknown fields are ignored", form(PID, NAME, part("colour", b"red"), IMAGE), MP, {}),
    ("text that is not UTF-8 is read as Latin-1", form(PID, part("name", "café".encode("latin-1")), IMAGE), MP,
     {"name": "café"}),
    ("the charset parameter is honoured", form(PID, part("name", "café".encode("cp1252")), IMAGE),
     {"Content-Type": "multipart/form-data; charset=cp1252; boundary=B"}, {"name": "café"}),
    ("UTF-8 text", form(PID, part("name", "Tasse à café ☕".encode()), part("metadata", b'{"k": 1}'), IMAGE), MP,
     {"name": "Tasse à café ☕", "metadata": '{"k":1}'}),
]


@pytest.mark.parametrize("case, body, headers, fields", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_well_formed_variants_are_queued_with_the_right_fields(client, r, case, body, headers, fields):
    job = stored(r, client, client.post(ROUTE, content=body, headers=headers))
    expected = {"product_id": "p1", "name": "n", "image_sha256": hashlib.sha256(JPEG).hexdigest()} | fields
    assert {k: job[k] for k in expected} == expected


def test_a_url_encoded_form_with_an_image_url_is_queued(client, r):
    body = b"product_id=p1&name=n&image_url=https%3A%2F%2Fexample.com%2Fa.jpg"
    job = stored(r, client, client.post(ROUTE, content=body,
                                         headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert job["image_url"] == "https://example.com/a.jpg" and job["image_sha256"] == ""


def test_an_image_part_just_over_the_limit_gets_413_naming_the_image(make_client):
    client = make_client(max_upload_bytes=len(JPEG) - 1)  # the body is within the multipart slack
    resp = client.post(ROUTE, content=form(PID, NAME, IMAGE), headers=MP)
    assert resp.status_code == 413 and resp.json()["error"] == {
        "code": "payload_too_large", "field": "image_file",
        "message": f"the image is over the limit of {len(JPEG) - 1} bytes"}
    client = make_client(max_upload_bytes=len(JPEG))
    assert client.post(ROUTE, content=form(PID, NAME, IMAGE), headers=MP).status_code == 202


# -- over real HTTP: the body's size and read deadline -------------------------------------------
def exchange(url: str, head: bytes, chunks: list[bytes], pause_s: float = 0.0) -> bytes:
    """Send a request's head and body chunks (pausing after the last), then read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: read what it said
                break
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def request_head(length: int) -> bytes:
    return (f"POST {ROUTE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {length}\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\n\r\n").encode()


def test_a_body_that_stalls_inside_the_image_gets_408(serve_api):
    url = serve_api(upload_read_timeout=1.0)
    body = form(PID, NAME, IMAGE)
    answer = exchange(url, request_head(len(body)), [body[: len(body) // 2]])  # the rest never comes
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b'"code":"request_timeout"' in answer and b'"field":null' in answer


def test_a_declared_oversize_body_gets_413_before_it_is_read(serve_api):
    url = serve_api(max_upload_bytes=20_000)
    answer = exchange(url, request_head(10_000_000), [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"code":"payload_too_large"' in answer and b'"field":"image_file"' in answer


def test_an_oversize_chunked_body_is_cut_off_with_413(serve_api):
    url = serve_api(max_upload_bytes=20_000)
    head = (f"POST {ROUTE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\n\r\n").encode()
    start = PID + NAME + b'--B\r\nContent-Disposition: form-data; name="image_file"; filename="a.jpg"\r\n\r\n'
    chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in [start, *[b"\xff" * 16384] * 64]]
    answer = exchange(url, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"code":"payload_too_large"' in answer


def test_the_form_is_still_documented(client):
    operation = client.get("/openapi.json").json()["paths"][ROUTE]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert operation["requestBody"]["required"] and body["required"] == ["product_id", "name"]
    assert list(body["properties"]) == ["product_id", "name", "image_file", "image_url", "description", "metadata",
                                        "callback_url"]
    assert body["properties"]["image_file"]["anyOf"][0]["contentMediaType"] == "application/octet-stream"
    assert operation["security"] == [{"APIKeyHeader": []}]


# -- the upload's direct route (api/lane.py) keeps what FastAPI's routing gave ---------------------
def test_upload_answers_carry_cors_headers_when_cors_is_on(make_client):
    client = make_client(cors_origins="https://shop.example")
    origin = {"Origin": "https://shop.example"}
    for body in (form(PID, NAME, IMAGE), form(PID, IMAGE)):  # a 202 and a 422
        resp = client.post(ROUTE, content=body, headers=MP | origin)
        assert resp.headers["access-control-allow-origin"] == "https://shop.example", resp.status_code
    preflight = client.options(ROUTE, headers=origin | {"Access-Control-Request-Method": "POST"})
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"


def test_other_methods_and_paths_near_the_upload_still_route(client):
    assert client.get(ROUTE).status_code == 405 and client.get(ROUTE).json()["error"]["code"] == "method_not_allowed"
    resp = client.post(ROUTE + "/x", content=form(PID, NAME, IMAGE), headers=MP)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_a_bug_in_the_upload_is_a_500_with_the_json_shape(make_client):
    client = make_client()
    client.app.state.queue = None  # enqueue fails with an AttributeError: no handler takes it
    resp = TestClient(client.app, raise_server_exceptions=False).post(ROUTE, content=form(PID, NAME, IMAGE), headers=MP)
    assert resp.status_code == 500 and resp.json() == {"error": {"code": "internal_error", "message": "internal error",
                                                                 "field": None}}
