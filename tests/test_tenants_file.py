"""TENANTS_FILE: who a key belongs to, refusals that say where, reloads on change and on SIGHUP
(the last one through a real uvicorn process, started as the README starts the API)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import httpx
import pytest

from api.settings import ApiSettings
from api.tenant_source import TenantSource
from api.tenants import Caller
from scripts.lib.procs import Child, api_args, free_port

TWO = {"shop-a": {"api_key": "key-a", "max_queue_depth": 100}, "shop-b": {"api_key": "key-b"}}


def write(path, body) -> str:
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return str(path)


def refusal(tmp_path, body, **kw) -> str | None:
    return ApiSettings(tenants_file=write(tmp_path / "tenants.json", body), **kw).refusal()


def test_keys_resolve_to_their_tenant_default_and_admin(tmp_path):
    sha = hashlib.sha256(b"key-c").hexdigest()
    path = write(tmp_path / "t.json", TWO | {"shop-c": {"api_key_sha256": sha.upper()}})
    book = TenantSource(path, ["plain"], ["root"]).book
    assert book.resolve("key-a") == Caller("shop-a") and book.resolve("key-b") == Caller("shop-b")
    assert book.resolve("key-c") == Caller("shop-c"), "api_key_sha256 stands for the key"
    assert book.resolve("plain") == Caller("default"), "API_KEY is the tenant default"
    assert book.resolve("root") == Caller(None, admin=True)
    assert book.resolve("nope") is None and book.resolve("") is None
    assert book.tenants["shop-a"].max_queue_depth == 100 and book.tenants["shop-b"].max_queue_depth is None
    assert "key-a" not in repr(book.tenants), "only the key's sha256 is kept"
    assert not book.single and TenantSource(None, ["plain"], []).book.single


@pytest.mark.parametrize("body, where", [
    ('{"shop-a": {"api_key": "k",}}', "not valid JSON: Expecting property name enclosed in double quotes at line 1, "
                                      "column 28"),
    ('["k"]', "must be a JSON object"),
    ({"bad name!": {"api_key": "k"}}, "tenant name 'bad name!'"),
    ({"shop-a": "k"}, "tenant 'shop-a' must be an object"),
    ({"shop-a": {}}, "tenant 'shop-a': give exactly one of api_key and api_key_sha256"),
    ({"shop-a": {"api_key": "k", "api_key_sha256": "0" * 64}}, "tenant 'shop-a': give exactly one"),
    ({"shop-a": {"api_key_sha256": "abc"}}, "tenant 'shop-a': api_key_sha256 must be 64 hexadecimal"),
    ({"shop-a": {"api_key": "k", "max_queue_depth": 0}}, "tenant 'shop-a': max_queue_depth must be a positive"),
    ({"shop-a": {"api_key": "k", "quota": 1}}, "tenant 'shop-a': unknown field 'quota'"),
    ({"shop-a": {"api_key": "same"}, "shop-b": {"api_key": "same"}},
     "one key belongs to two tenants: 'shop-a' and 'shop-b'"),
])
def test_a_bad_file_refuses_the_start_naming_the_file_and_the_place(tmp_path, body, where):
    reason = refusal(tmp_path, body)
    assert reason is not None and str(tmp_path / "tenants.json") in reason and where in reason, reason


def test_a_key_shared_with_api_key_or_the_admin_is_refused(tmp_path):
    assert "'shop-a' and 'default'" in refusal(tmp_path, TWO, api_key="key-a")
    assert "'shop-b' and '(ADMIN_API_KEY)'" in refusal(tmp_path, TWO, admin_api_key="key-b")
    assert refusal(tmp_path, TWO, api_key="other") is None
    assert "cannot be read" in ApiSettings(tenants_file=str(tmp_path / "missing.json")).refusal()
    assert ApiSettings(admin_api_key="root").refusal() is None, "a tenants file or an admin key is a key"


def test_the_api_refuses_to_start_with_a_bad_file(tmp_path, make_client):
    with pytest.raises(RuntimeError, match="line 1, column 2"):
        make_client(allow_anonymous=False, tenants_file=write(tmp_path / "t.json", "{x"))


def test_a_changed_file_is_reread_and_a_bad_one_keeps_the_tenants(tmp_path, caplog, monkeypatch):
    path = tmp_path / "t.json"
    source = TenantSource(write(path, TWO), [], [])
    write(path, {"shop-a": {"api_key": "key-a2"}})
    monkeypatch.setattr("api.tenant_source.CHECK_INTERVAL_S", 0.0)
    assert source.current().resolve("key-a2") == Caller("shop-a") and source.current().resolve("key-a") is None
    write(path, '{"shop-a": ')
    book = source.current()
    assert book.resolve("key-a2") == Caller("shop-a"), "a bad reload keeps the previous tenants"
    assert "tenants not reloaded (the file changed)" in caplog.text and "not valid JSON" in caplog.text
    assert not source.reload("SIGHUP") and source.book is book


def test_the_file_is_looked_at_once_a_second_at_most(tmp_path):
    path = tmp_path / "t.json"
    source = TenantSource(write(path, TWO), [], [])
    write(path, {"shop-z": {"api_key": "key-z"}})
    assert source.current().resolve("key-z") is None, "looked at again only a second later"
    source._checked_at -= 1.0  # a second has passed (no sleep)
    assert source.current().resolve("key-z") == Caller("shop-z")


def test_sighup_rereads_the_file_and_does_not_stop_the_api(tmp_path, redis_url, namespace):
    path = tmp_path / "t.json"
    write(path, TWO)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"} | {
        "REDIS_URL": redis_url, "QUEUE_NAMESPACE": namespace, "TENANTS_FILE": str(path)}
    api = Child.start("api", api_args(port), tmp_path / "logs", env=env)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/whoami"
        deadline = time.monotonic() + 60
        while True:
            assert api.alive(), api.log_text()
            try:
                if httpx.get(url, headers={"X-API-Key": "key-a"}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, api.log_text()
            time.sleep(0.2)
        before = os.stat(path)
        new = json.dumps({"shop-n": {"api_key": "key-n"}})
        write(path, new.ljust(before.st_size))  # the same size and mtime: only SIGHUP can tell
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        time.sleep(1.5)
        assert httpx.get(url, headers={"X-API-Key": "key-n"}).status_code == 401, "not reread without SIGHUP"
        os.kill(api.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.get(url, headers={"X-API-Key": "key-n"}, timeout=2).status_code != 200:
            assert api.alive(), "SIGHUP stopped the API:\n" + api.log_text()
            assert time.monotonic() < deadline, api.log_text()
            time.sleep(0.1)
        assert httpx.get(url, headers={"X-API-Key": "key-n"}).json() == {"tenant": "shop-n", "admin": False}
        assert httpx.get(url, headers={"X-API-Key": "key-a"}).status_code == 401
        assert api.alive()
    finally:
        api.stop()
