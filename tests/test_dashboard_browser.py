"""The dashboard in a real headless Chromium (Debian's ``chromium`` package), against a real
API server (uvicorn) and a serving worker: key prompt, a job seen completing, Retry pressed
on a failed job, a search by text and by photo, a phone-sized screen, and /docs offline.

Every request the browser makes to another host is refused and recorded: the pages must
work without internet access.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest

from conftest import CORPUS, corpus_files, require_tool

CHROMIUM_HOW = "apt-get install -y chromium (Debian), or run .ci/run as root, which installs it"
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' for playwright")
KEY = "dashboard-test-key"
FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def live_api(serve_api, request, tmp_path):
    """The API served over HTTP by uvicorn in a thread, on a free port, with an API key; with a
    tenants file (the test's parameter), KEY is the admin's."""
    tenants = getattr(request, "param", None)
    if tenants is None:
        return serve_api(api_key=KEY)
    (tmp_path / "tenants.json").write_text(json.dumps(tenants))
    return serve_api(allow_anonymous=False, tenants_file=str(tmp_path / "tenants.json"), admin_api_key=KEY)


@pytest.fixture
def browser_page(live_api, tmp_path):
    """A Chromium page that may talk to the API only; ``page.blocked`` lists what it tried elsewhere."""
    chromium = require_tool("chromium", CHROMIUM_HOW)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        blocked, errors = [], []

        def only_the_api(route):
            if route.request.url.startswith(live_api):
                return route.continue_()
            blocked.append(route.request.url)
            return route.abort()

        context.route("**/*", only_the_api)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page, blocked, errors
        context.close()
        browser.close()


def api_upload(base: str, path, product_id: str, **metadata) -> str:
    resp = httpx.post(f"{base}/api/v1/index-product-with-image", headers={"X-API-Key": KEY},
                      data={"product_id": product_id, "name": path.stem.title(),
                            "metadata": json.dumps(metadata)},
                      files={"image_file": (path.name, path.read_bytes(), "application/octet-stream")})
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def job_status(base: str, job_id: str) -> dict:
    return httpx.get(f"{base}/api/v1/queue/status/{job_id}").json()


def test_dashboard_in_chromium(live_api, browser_page, serve_worker, tmp_path):
    page, blocked, errors = browser_page
    expect = playwright_api.expect
    worker = serve_worker(worker_batch_size=8, worker_heartbeat_ttl=3)  # a beat a second

    # 1. the page asks for the key; a wrong one is refused clearly; the right one opens it
    page.goto(f"{live_api}/dashboard")
    expect(page.locator("#key-message")).to_contain_text("needs a key")
    page.fill("#key-input", "not-the-key")
    page.click("#key-form button")
    expect(page.locator("#key-message")).to_contain_text("Wrong API key")
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("#tenant")).to_have_text("tenant default")  # whose data the page shows (whoami)
    assert page.evaluate("sessionStorage.getItem('clipq.apiKey')") == KEY
    assert page.context.cookies() == []
    expect(page.locator("#worker-rows tr")).to_have_count(1)
    expect(page.locator("#worker-rows")).to_contain_text(worker.settings.worker_id)
    expect(page.locator("#worker-rows")).to_contain_text("alive")

    # 2-3. uploads through the API; the page shows them completed
    thumb = f"{live_api}/docs-assets/favicon.png"
    photos = [p for p in corpus_files("index") if p.stem in ("astronaut", "camera", "chelsea", "coffee")]
    good = [api_upload(live_api, path, f"sku-{i}", image_url=thumb, color="red") for i, path in enumerate(photos)]
    expect(page.locator("#n-completed")).to_have_text(str(len(good)), timeout=60_000)
    expect(page.locator("#n-without-model")).to_have_text("0")
    api_upload(live_api, photos[0], "sku-0", image_url=thumb, color="red")  # sent again: unchanged
    expect(page.locator("#n-completed")).to_have_text(str(len(good) + 1), timeout=60_000)
    expect(page.locator("#n-without-model")).to_have_text("1")
    page.fill("#lookup-input", good[0])
    page.click("#lookup-form button")
    expect(page.locator("#lookup-result")).to_contain_text("completed")
    expect(page.locator("#lookup-result")).to_contain_text("sku-0")

    # 4. a job that fails shows up with its error; Retry re-queues it through the API
    bad = api_upload(live_api, CORPUS / "hostile" / "truncated_jpeg.jpg", "sku-bad")
    retry = page.locator(f"button[data-job='{bad}']")
    expect(retry).to_be_visible(timeout=60_000)
    expect(page.locator("#failed-rows")).to_contain_text("cannot decode image")
    expect(page.locator("#group-rows")).to_contain_text("cannot decode image")
    failed_at = job_status(live_api, bad)["updated_at"]
    retry.click()
    expect(page.locator("#failed-rows .outcome.ok")).to_contain_text("re-queued")
    deadline = time.monotonic() + 30  # the worker takes it again (and fails it again: it is broken)
    while job_status(live_api, bad)["updated_at"] == failed_at and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_status(live_api, bad)["updated_at"] != failed_at

    # 5. search from the page, by text and by photo; thumbnails from metadata.image_url
    page.fill("#search-text", "a photo of a product")
    page.click("#search-form button")
    expect(page.locator("#search-results li")).to_have_count(len(good))
    expect(page.locator("#search-results")).to_contain_text("sku-0")
    expect(page.locator("#search-results")).to_contain_text('"color":"red"')
    page.wait_for_function("[...document.querySelectorAll('#search-results img')].every(i => i.naturalWidth > 0)")
    page.set_input_files("#search-file", str(photos[1]))
    expect(page.locator("#search-status")).to_contain_text(f"results for {photos[1].name}")
    expect(page.locator("#search-results li").first).to_contain_text("sku-1")  # itself, first

    page.wait_for_timeout(3500)  # one more refresh: the sparklines have their samples
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("CLIPQ_SCREENSHOT"):  # how api/README.md's picture is made
        shutil.copy(shot, os.environ["CLIPQ_SCREENSHOT"])

    # a phone-sized screen: nothing wider than the screen
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)

    # /docs: Swagger UI renders from the package's assets, offline
    page.goto(f"{live_api}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("clipq")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/workers")).to_be_visible()

    assert blocked == [], f"the pages asked for something outside the API: {blocked}"
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.mark.parametrize("live_api", [{"shop-a": {"api_key": "key-a"}, "shop-b": {"api_key": "key-b"}}],
                         indirect=True)
def test_an_admin_looks_at_one_tenant_in_the_dashboard(live_api, browser_page, serve_worker):
    page, blocked, errors = browser_page
    expect = playwright_api.expect
    serve_worker()
    photo = corpus_files("index")[0]
    for key, name in (("key-a", "Alpha Lamp"), ("key-b", "Beta Lamp")):
        resp = httpx.post(f"{live_api}/api/v1/index-product-with-image", headers={"X-API-Key": key},
                          data={"product_id": "p1", "name": name}, files={"image_file": (photo.name, photo.read_bytes())})
        job = resp.json()["job_id"]
        assert httpx.get(f"{live_api}/api/v1/queue/status/{job}", params={"wait": 30},
                         headers={"X-API-Key": key}).json()["status"] == "completed"
    page.goto(f"{live_api}/dashboard?tenant=shop-b")
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    expect(page.locator("#tenant")).to_have_text("admin: tenant shop-b")
    page.select_option("#search-mode", "keyword")
    page.fill("#search-text", "lamp")
    page.click("#search-form button")
    expect(page.locator("#search-results li")).to_have_count(1)
    expect(page.locator("#search-results")).to_contain_text("Beta Lamp")
    page.goto(f"{live_api}/dashboard")  # every tenant: a search must name one
    expect(page.locator("#tenant")).to_have_text("admin: every tenant")
    page.fill("#search-text", "lamp")
    page.click("#search-form button")
    expect(page.locator("#search-status")).to_contain_text("?tenant=")
    assert not blocked and not errors, (blocked, errors)
