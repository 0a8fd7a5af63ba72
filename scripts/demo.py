#!/usr/bin/env python3
"""Index the sample photos through the running API, show each job's status and the stats."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


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
    a = p.parse_args()
    headers = {"X-API-Key": a.api_key} if a.api_key else {}
    wait_ready(a.api, 60)
    photos = sorted(f for f in SAMPLES.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
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
    while pending and time.monotonic() < deadline:
        for sku, url in list(pending.items()):
            status = httpx.get(a.api + url, headers=headers, timeout=5).json()
            if status["status"] in ("completed", "failed"):
                print(f"  {sku:<24} {status['status']:<10} {status.get('error_message') or ''}")
                del pending[sku]
        time.sleep(0.5)
    for sku in pending:
        print(f"  {sku:<24} still pending after {a.timeout:.0f}s (is the worker running?)")
    print("stats:", json.dumps(httpx.get(f"{a.api}/api/v1/queue/stats", timeout=5).json(), indent=2))
    if photos and not pending:
        query = photos[0]
        r = httpx.post(f"{a.api}/api/v1/search/image", headers=headers, data={"limit": "3"},
                       files={"image_file": (query.name, query.read_bytes())}, timeout=30)
        print(f"search by the photo {query.name}: {r.status_code}")
        for hit in r.json().get("results", []):
            print(f"  {hit['score']:.3f}  {hit['product_id']}")


if __name__ == "__main__":
    main()
