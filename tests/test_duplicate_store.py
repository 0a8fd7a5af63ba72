"""The near-duplicate lookup and the pairs' pages on both engines (Qdrant Edge, and the server
store's code path on qdrant-client's in-process mode), with hashes chosen bit by bit."""
from __future__ import annotations

import numpy as np
import pytest

from batcher.config import DuplicateConfig
from batcher.duplicates import pairs
from batcher.duplicates.finder import DuplicateFinder
from batcher.queue.jobs import Job
from conftest import open_engine

DIM = 8
BASE = 0x0123_4567_89AB_CDEF


def flip(h: int, *bits: int) -> int:
    for b in bits:
        h ^= 1 << b
    return h


def store_photos(store, finder, photos: dict[str, int], vectors: np.ndarray | None = None) -> dict[str, list]:
    """Store one job per product with its hash, as the finish stage does; what each listed."""
    jobs = [Job(f"job-{p}", p, p, "", {}, f"sha-{p}", 0, 0, version=1) for p in photos]
    vectors = np.ones((len(jobs), DIM), np.float32) if vectors is None else vectors
    near = finder.mark(jobs, {j.job_id: photos[j.product_id] for j in jobs}, vectors)
    store.upsert(jobs, vectors)
    return {j.product_id: [(n.product_id, n.distance) for n in near[j.job_id]] for j in jobs}


@pytest.fixture(params=["edge", "server"])
def store(request, tmp_path):
    s = open_engine(request.param, tmp_path / "q", DIM)
    yield s
    s.close()


def test_a_batch_finds_stored_photos_within_the_distance_and_each_other(store):
    finder = DuplicateFinder(store, DuplicateConfig(max_distance=10, max_listed=20))
    assert store_photos(store, finder, {"a": BASE, "far": ~BASE & (2**64 - 1)}) == {"a": [], "far": []}
    listed = store_photos(store, finder, {
        "b": flip(BASE, 0, 17, 33, 50, 63, 1, 2, 3, 4, 5),  # 10 bits: spread over every band
        "c": flip(BASE, *range(11)),  # 11 bits: too far from a, 1 bit from b
        "a": flip(BASE, 40)})  # a again: never its own duplicate; its old point is being replaced
    # a's stored point is left out (a is in the batch: its point is being replaced); c finds b
    # earlier in its batch, 9 bits apart; the new a is 11 and 12 bits from b and c
    assert listed == {"b": [], "c": [("b", 9)], "a": []}


def test_stored_photos_of_other_products_are_found_across_batches(store):
    finder = DuplicateFinder(store, DuplicateConfig(max_distance=10, max_listed=20))
    store_photos(store, finder, {"a": BASE})
    listed = store_photos(store, finder, {"b": flip(BASE, 0, 17, 33, 50, 63, 1, 2, 3, 4, 5),
                                          "c": flip(BASE, *range(12))})
    assert listed["b"] == [("a", 10)]
    assert ("a", 12) not in listed["c"]  # 12 bits: beyond the distance


def test_pairs_page_in_point_id_order_and_drop_a_changed_photo(store):
    finder = DuplicateFinder(store, DuplicateConfig(max_distance=6, max_listed=20))
    store_photos(store, finder, {"a": BASE})
    store_photos(store, finder, {f"copy-{i}": flip(BASE, i) for i in range(5)})
    seen, cursor = [], None
    while True:
        got = pairs.page(store, cursor, 2)
        seen += [(p["product_id"], p["duplicate_of"]["product_id"]) for p in got["pairs"]]
        if got["next_cursor"] is None:
            break
        cursor = got["next_cursor"]
    # copy-i lists a, and the copies stored before it in its batch
    assert sum(1 for _, other in seen if other == "a") == 5 and len(seen) == 5 + 10
    store_photos(store, finder, {"a": flip(BASE, *range(30))})  # a's photo changed: its pairs go
    assert all(other != "a" for p in [pairs.page(store, None, 100)] for other in
               (q["duplicate_of"]["product_id"] for q in p["pairs"]))


def test_a_clip_confirmation_keeps_only_pairs_whose_vectors_agree(store):
    """WORKER_DUPLICATE_MIN_COSINE: the hashes of b and c are both 2 bits from a's, but only b's
    vector points where a's does (stored, and in the same batch)."""
    finder = DuplicateFinder(store, DuplicateConfig(max_distance=10, max_listed=20, min_cosine=0.9))
    east, north = np.eye(DIM, dtype=np.float32)[0], np.eye(DIM, dtype=np.float32)[1]
    store_photos(store, finder, {"a": BASE}, np.stack([east]))
    listed = store_photos(store, finder, {"b": flip(BASE, 1, 2), "c": flip(BASE, 3, 4), "d": flip(BASE, 5, 6)},
                          np.stack([east, north, north]))
    assert listed == {"b": [("a", 2)], "c": [], "d": [("c", 4)]}
