"""Threads uploading one small photo over HTTP until stopped, for the cluster tests
(tests/test_failover.py, tests/test_reshard.py): each answer as (t, product, code, seconds, body,
headers)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx


def numbered(prefix: str) -> Callable[[int], Iterator[str]]:
    """Thread n's product ids: ``<prefix><n>-0``, ``<prefix><n>-1``, ..."""
    def ids(n: int) -> Iterator[str]:
        i = 0
        while True:
            yield f"{prefix}{n}-{i}"
            i += 1
    return ids


class Uploader:
    def __init__(self, base: str, image: bytes, threads: int, products: Callable[[int], Iterator[str]],
                 pause_s: float = 0) -> None:
        self.base, self.image, self.products, self.pause_s = base, image, products, pause_s
        self.stop = threading.Event()
        self.seen: list[tuple[float, str, int, float, dict, dict]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            for product in self.products(n):
                if self.stop.is_set():
                    return
                t0 = time.monotonic()
                r = http.post("/api/v1/index-product-with-image", data={"product_id": product, "name": product},
                              files={"image_file": ("x.jpg", self.image, "image/jpeg")})
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                self.seen.append((t0, product, r.status_code, time.monotonic() - t0, body, dict(r.headers)))
                time.sleep(self.pause_s)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for t in self.threads:
            t.join(30)
