"""Property-based tests: random and mutated bytes through the decode path, and the API's
OpenAPI document through schemathesis."""
from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st

from batcher.decode import DecodeError, decode
from conftest import corpus_files, served
from models.preprocessing import Preprocessing

PREP = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
SEEDS = [p.read_bytes() for p in corpus_files("index") if p.stat().st_size < 200_000][:8]
TIME_BOUND_S = 2.0


def decode_within_bound(data: bytes) -> None:
    t0 = time.perf_counter()
    try:
        out = decode(data, PREP, max_pixels=4_000_000)
        assert out.shape == (32, 32, 3)
    except DecodeError:
        pass  # the only exception allowed to escape
    assert time.perf_counter() - t0 < TIME_BOUND_S


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_only_raise_decode_error(data):
    decode_within_bound(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=16),
       st.floats(0.05, 1.0))
def test_mutated_real_images_only_raise_decode_error(seed, flips, keep):
    data = bytearray(seed[: max(16, int(len(seed) * keep))])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    decode_within_bound(bytes(data))


@given(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBPVP8 "]), st.binary(max_size=512))
@settings(max_examples=200, deadline=None)
def test_valid_magic_with_garbage_only_raises_decode_error(magic, tail):
    decode_within_bound(magic + tail)


@pytest.fixture(scope="module")
def live_api(redis_url):
    from api.main import create_app
    from api.settings import ApiSettings

    app = create_app(ApiSettings(redis_url=redis_url, queue_namespace="schemathesis", search_timeout=0.5,
                                 allow_anonymous=True))
    with served(app) as url:
        yield url


def check_no_5xx(case) -> None:
    response = case.call(timeout=10)
    answered_by_workers = ("/api/v1/search", "/api/v1/products", "/api/v1/duplicates")
    no_worker = case.path.startswith(answered_by_workers) and response.status_code == 503
    assert response.status_code < 500 or no_worker, (case.method, case.path, response.status_code, response.text)
    if response.status_code >= 400:
        assert "error" in response.json(), response.text


def test_no_generated_request_gets_a_5xx(live_api):
    """schemathesis generates requests for every operation of the OpenAPI document."""
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:
        run = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                       database=None)(given(case=operation.as_strategy())(check_no_5xx))
        run()
