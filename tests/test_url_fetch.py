"""image_url: the address policy (a pure unit) and the fetcher against a local HTTP server."""
from __future__ import annotations

import ipaddress
import ssl
import subprocess

import pytest
from pydantic import ValidationError

from conftest import corpus_files, require_tool
from url_server import ImageServer

from batcher.fetch import FetchError, FetchLimits, UrlFetcher
from batcher.queue.addresses import UrlRefused, parse_networks, parse_url, refusal

LOOPBACK_ONLY = parse_networks("127.0.0.1/32")
PHOTO = next(p for p in corpus_files("index") if p.suffix == ".jpg").read_bytes()


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("fd12::1", "private"), ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"), ("168.63.129.16", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "reserved"), ("240.0.0.1", "private"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("2002:a00:1::", "private"), ("64:ff9b::a9fe:a9fe", "cloud metadata"),
    ("93.184.216.34", None), ("2606:2800:220:1::1", None), ("8.8.8.8", None),
])
def test_address_policy_refuses_what_is_not_public(address, why):
    assert refusal(ipaddress.ip_address(address)) == why


def test_allowed_networks_let_chosen_addresses_through():
    assert refusal(ipaddress.ip_address("127.0.0.1"), LOOPBACK_ONLY) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK_ONLY) is None
    assert refusal(ipaddress.ip_address("127.0.0.2"), LOOPBACK_ONLY) == "loopback"
    assert refusal(ipaddress.ip_address("10.9.0.1"), parse_networks("10.9.0.0/16, 127.0.0.1/32")) is None


def test_allowed_networks_is_a_typed_setting(worker_settings):
    from batcher.settings import WorkerSettings

    assert worker_settings(image_url_allowed_networks="127.0.0.1/32").fetch.limits.allowed == LOOPBACK_ONLY
    with pytest.raises(ValidationError, match="not a network"):
        WorkerSettings(image_url_allowed_networks="127.0.0.1/8")  # host bits set: a typo, not a network
    with pytest.raises(ValidationError, match="not a network"):
        WorkerSettings(image_url_allowed_networks="localhost")


@pytest.mark.parametrize("url, message", [
    ("ftp://example.com/a.jpg", "only http and https"), ("file:///etc/passwd", "only http and https"),
    ("gopher://example.com/", "only http and https"), ("http:///a.jpg", "no host"),
    ("http://user:pw@example.com/a.jpg", "credentials"), ("http://example.com:99999/", "cannot be parsed"),
    ("http://example.com/a b.jpg", "spaces"), ("http://example.com/" + "a" * 2100, "characters"), ("", "characters"),
])
def test_urls_that_are_not_fetched(url, message):
    with pytest.raises(UrlRefused, match=message):
        parse_url(url)


def test_url_parts():
    t = parse_url("HTTPS://[2606:2800::1]:8443/p/a.jpg?w=2#frag")
    assert (t.scheme, t.host, t.port, t.path, t.host_header) == ("https", "2606:2800::1", 8443, "/p/a.jpg?w=2",
                                                                   "[2606:2800::1]:8443")
    assert parse_url("http://shop.example/x").host_header == "shop.example"


@pytest.fixture
def server():
    with ImageServer(PHOTO, slow_s=2.0) as s:
        yield s


def fetcher(allowed=LOOPBACK_ONLY, **limits) -> UrlFetcher:
    return UrlFetcher(FetchLimits(**{"max_bytes": 300_000, "connect_timeout": 2, "read_timeout": 0.5,
                                     "total_timeout": 5, "allowed": allowed} | limits))


def fails(fetch: UrlFetcher, url: str, message: str, transient: bool) -> FetchError:
    with pytest.raises(FetchError, match=message) as caught:
        fetch.fetch(url)
    assert caught.value.transient is transient, caught.value
    assert str(caught.value).startswith("cannot fetch image_url: ")
    return caught.value


def test_fetches_the_photo_with_the_url_host(server):
    assert fetcher().fetch(server.url("/photo")) == PHOTO
    assert server.hosts == [f"127.0.0.1:{server.port}"]


def test_follows_three_redirects_and_no_more(server):
    assert fetcher().fetch(server.url("/hop/3")) == PHOTO
    fails(fetcher(), server.url("/hop/4"), "more than 3 redirects", transient=False)
    assert server.hits["/photo"] == 1  # the fourth redirect was not followed


def test_every_redirect_is_checked_again(server):
    fails(fetcher(), server.url("/elsewhere"), r"not allowed \(loopback\)", transient=False)
    assert server.hits["/elsewhere"] == 1


def test_default_settings_refuse_loopback_before_connecting(server):
    fails(fetcher(allowed=()), server.url("/photo"), r"not allowed \(loopback\)", transient=False)
    fails(fetcher(allowed=()), "http://10.0.0.1/a.jpg", r"not allowed \(private\)", transient=False)
    fails(fetcher(allowed=()), "http://169.254.169.254/latest/meta-data/", r"\(cloud metadata\)", transient=False)
    assert sum(server.hits.values()) == 0


def test_answers_and_bodies_that_fail_for_good(server):
    fails(fetcher(), server.url("/missing"), "HTTP 404", transient=False)
    fails(fetcher(), server.url("/text"), "not a JPEG, PNG or WebP", transient=False)
    fails(fetcher(), "ftp://127.0.0.1/a.jpg", "only http and https", transient=False)
    fails(fetcher(), "http://bad..name/a.jpg", "host name is not valid", transient=False)


def test_server_errors_and_timeouts_are_transient(server):
    fails(fetcher(), server.url("/flaky"), "HTTP 500", transient=True)
    assert fetcher().fetch(server.url("/flaky")) == PHOTO
    fails(fetcher(), server.url("/slow"), "timed out", transient=True)  # silent past the read timeout


def test_a_trickling_body_meets_the_deadline(server):
    """Each byte comes well within the read timeout: the deadline of the whole fetch ends it."""
    fails(fetcher(read_timeout=1, total_timeout=0.6), server.url("/trickle"), "timed out", transient=True)


def test_an_endless_body_is_dropped_once_over_the_limit(server):
    fails(fetcher(), server.url("/huge"), "over the limit of 300000 bytes", transient=False)
    assert server.huge_sent < 32 * 1024 * 1024  # it stopped reading: the server could not send it all


def test_a_closed_port_is_transient():
    from scripts.lib.procs import free_port

    fails(fetcher(), f"http://127.0.0.1:{free_port()}/a.jpg", "connection failed", transient=True)


def test_https_names_the_host_and_checks_its_certificate(tmp_path):
    """TLS runs over the pinned address with the URL's host as server name: a certificate for
    127.0.0.1 that the fetcher trusts passes; the same server fails for good with the system's
    trust store."""
    openssl = require_tool("openssl", "apt-get install -y openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    with ImageServer(PHOTO, tls=served) as server:
        trusting = ssl.create_default_context(cafile=str(cert))
        limits = FetchLimits(300_000, read_timeout=2, allowed=LOOPBACK_ONLY)
        assert UrlFetcher(limits, tls=trusting).fetch(server.url("/hop/1")) == PHOTO
        assert server.base.startswith("https://") and server.hosts == [f"127.0.0.1:{server.port}"] * 2
        fails(fetcher(), server.url("/photo"), "TLS certificate is not valid", transient=False)
