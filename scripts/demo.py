#!/usr/bin/env python3
"""Index the sample photos (scripts/samples/) through the running API, show each job's status and the stats.

    python -m scripts.demo --api http://127.0.0.1:8000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

from scripts.lib.photos import SAMPLES, sample_photos


def wait_ready(api: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"the API at {api} is not ready after {timeout_s:.0f}s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--api", default="http://127.0.0.1:8000")
    p.add_argument("--api-key")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the jobs")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 unless every photo is indexed and a search by photo finds it first")
    a = p.parse_args()
    headers = {"X-API-Key": a.api_key} if a.api_key else {}
    wait_ready(a.api, 60)
    photos = sample_photos()
    jobs = {}
    for photo in photos:
        sku = "demo-" + photo.stem
        r = httpx.post(f"{a.api}/api/v1/index-product-with-image", headers=headers,
                       data={"product_id": sku, "name": photo.stem.replace("_", " ").title(),
                             "description": f"sample photo {photo.name}",
                             "metadata": json.dumps({"source": "samples"})},
                       files={"image_file": (photo.name, photo.read_bytes())}, timeout=10)
        print(f"POST {photo.name:<24} -> {r.status_code} {r.json().get('job_id', r.text)}")
        if r.status_code == 202:
            jobs[sku] = r.json()["status_url"]
    deadline = time.monotonic() + a.timeout
    pending = dict(jobs)
    completed: set[str] = set()
    while pending and time.monotonic() < deadline:
        for sku, url in list(pending.items()):
            status = httpx.get(a.api + url, headers=headers, timeout=5).json()
            if status["status"] in ("completed", "failed"):
                print(f"  {sku:<24} {status['status']:<10} {status.get('error_message') or ''}")
                del pending[sku]
                if status["status"] == "completed":
                    completed.add(sku)
        time.sleep(0.5)
    for sku in pending:
        print(f"  {sku:<24} still pending after {a.timeout:.0f}s (is the worker running?)")
    print("stats:", json.dumps(httpx.get(f"{a.api}/api/v1/queue/stats", headers=headers, timeout=5).json(), indent=2))
    found = search_first(a.api, headers, photos[0]) if photos and not pending else None
    if a.strict:
        problems = check_strict(photos, jobs, completed, found)
        for problem in problems:
            print(f"demo: FAILED: {problem}", file=sys.stderr)
        sys.exit(1 if problems else 0)


def search_first(api: str, headers: dict, query: Path) -> str | None:
    """Search by one photo; print the hits and return the first hit's product id."""
    r = httpx.post(f"{api}/api/v1/search/image", headers=headers, data={"limit": "3"},
                   files={"image_file": (query.name, query.read_bytes())}, timeout=30)
    print(f"search by the photo {query.name}: {r.status_code}")
    hits = r.json().get("results", []) if r.status_code == 200 else []
    for hit in hits:
        print(f"  {hit['score']:.3f}  {hit['product_id']}")
    return hits[0]["product_id"] if hits else None


def check_strict(photos: list[Path], jobs: dict, completed: set, found: str | None) -> list[str]:
    problems = []
    if not photos:
        problems.append(f"no sample photos in {SAMPLES}")
    if set(jobs) != {"demo-" + p.stem for p in photos}:
        problems.append("not every sample photo was accepted (202)")
    if completed != set(jobs):
        problems.append(f"jobs not completed: {sorted(set(jobs) - completed)}")
    if photos and found != "demo-" + photos[0].stem:
        problems.append(f"the search by {photos[0].name} found {found!r} first, not itself")
    return problems


if __name__ == "__main__":
    main()
