"""Search modes at the store, on both engines: keywords (BM25) find a SKU or a brand, hybrid
keeps the exact match among CLIP's, one result per product at its best photo, "more like this",
and a store made before keywords, upgraded and backfilled without touching its CLIP vectors."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_edge import Distance, EdgeConfig, EdgeShard, EdgeVectorParams, Point, UpdateOperation

from batcher.store import StoreConfig, open_store, point_id
from batcher.store.asks import Ask
from batcher.store.grouping import page_size, per_product
from conftest import open_engine
from test_store import DIM, job, read_all, unit

ENGINES = ["edge", "server"]
NAMES = ["Red coffee cup", "Blue tea pot", "Green mug", "Steel kettle", "Glass jar", "Oak tray"]


def catalog(store, n: int = 30) -> np.ndarray:
    """``n`` products, p0..p5 with distinct names, p3 with the SKU "XK-4471" in its metadata and
    p4 with the brand "Pikolo" in its description; the rest named "Product i"."""
    jobs = [job(f"p{i}", shop="a" if i % 2 == 0 else "b") for i in range(n)]
    for i, name in enumerate(NAMES):
        jobs[i] = replace(jobs[i], name=name)
    jobs[3].metadata["sku"] = "XK-4471"
    jobs[4] = replace(jobs[4], description="Hand made by Pikolo")
    vectors = unit(n, seed=5)
    store.upsert(jobs, vectors)
    return vectors


def ids(results) -> list[str]:
    return [r.product_id for r in results]


@pytest.mark.parametrize("engine", ENGINES)
def test_keywords_find_a_sku_a_brand_and_a_name_first(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", DIM)
    catalog(store)
    sku, brand, name, nothing = store.find([Ask(5, words="xk-4471"), Ask(5, words="pikolo"), Ask(5, words="tea pot"),
                                            Ask(5, words="zeppelin")])
    filtered = store.find([Ask(5, {"shop": "a"}, words="xk-4471 pikolo")])[0]
    store.close()
    assert ids(sku) == ["p3"] and ids(brand) == ["p4"] and ids(name)[0] == "p1" and nothing == []
    assert ids(filtered) == ["p4"]  # p3 is in shop b


@pytest.mark.parametrize("engine", ENGINES)
def test_hybrid_keeps_the_exact_match_among_the_nearest_vectors(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", DIM)
    vectors = catalog(store)
    far = -vectors[3]  # CLIP alone ranks p3 last
    (dense,), (fused,) = store.find([Ask(5, vector=far.tolist())]), store.find([Ask(5, vector=far.tolist(), words="XK-4471")])
    store.close()
    assert "p3" not in ids(dense)
    assert "p3" in ids(fused) and len(fused) == 5 and ids(fused)[0] in ("p3", ids(dense)[0])
    assert [r.score for r in fused] == sorted((r.score for r in fused), reverse=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_one_result_per_product_at_its_best_photo(tmp_path, engine):
    """p0 has 40 photos near the query: a search for 3 products reads past them."""
    store = open_engine(engine, tmp_path / "q", DIM)
    query = unit(1, seed=9)[0]
    photos = [(point_id("p0", i), (query + 0.1 * unit(1, seed=200 + i)[0]).tolist(),
               {"product_id": "p0", "name": "cup", "photo_index": i, "metadata": {}}) for i in range(1, 41)]
    others = [(point_id(f"p{k}"), (query + 0.5 * unit(1, seed=100 + k)[0]).tolist(),
               {"product_id": f"p{k}", "name": "cup", "metadata": {}}) for k in range(1, 4)]
    exact = [(point_id("p0", 41), query.tolist(), {"product_id": "p0", "name": "cup", "photo_index": 41, "metadata": {}})]
    store.write(photos + others + exact)
    hits = store.search(query[None], [3], [{}])[0]
    words = store.find([Ask(10, words="cup")])[0]
    fused, like = store.find([Ask(3, vector=query.tolist(), words="cup"), Ask(3, like=(query.tolist(),))])
    store.close()
    assert ids(hits)[0] == "p0" and hits[0].photo_index == 41 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 3 and len(set(ids(hits))) == 3 and hits[1].score < 0.99
    assert sorted(ids(words)) == ["p0", "p1", "p2", "p3"]
    for found in (fused, like):  # the fused query and the recommend query read on past p0's photos too
        assert ids(found)[0] == "p0" and len(found) == 3 and len(set(ids(found))) == 3
    assert like[0].photo_index == 41  # (BM25 ties p0's photos: the fused best may be any of them)


@pytest.mark.parametrize("engine", ENGINES)
def test_more_like_this_leaves_the_product_out_and_keeps_the_filter(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", DIM)
    base = unit(1, seed=1)[0]
    vectors = np.stack([base + 0.05 * i * unit(1, seed=50 + i)[0] for i in range(12)])
    store.upsert([job(f"p{i}", shop="a" if i % 2 == 0 else "b") for i in range(12)], vectors)
    like = store.photos("p0")
    (anywhere,), (in_a,) = (store.find([Ask(3, like=tuple(like), exclude="p0")]),
                            store.find([Ask(3, {"shop": "a"}, like=tuple(like), exclude="p0")]))
    missing = store.photos("nope")
    store.close()
    cosine = vectors @ base / np.linalg.norm(vectors, axis=1)
    nearest = [f"p{i}" for i in np.argsort(-cosine) if i != 0]
    assert len(like) == 1 and np.allclose(like[0], vectors[0] / np.linalg.norm(vectors[0]), atol=1e-5)
    assert ids(anywhere) == nearest[:3]
    assert ids(in_a) == [p for p in nearest if int(p[1:]) % 2 == 0][:3]
    assert missing == []


# -- a store made before keywords ---------------------------------------------------------------
def old_edge_store(root, points) -> None:
    """An embedded store as the worker made it before keywords: no sparse vector at all."""
    folder = root / "products"
    folder.mkdir(parents=True)
    shard = EdgeShard.create(str(folder), EdgeConfig(vectors=EdgeVectorParams(size=DIM, distance=Distance.Cosine)))
    shard.update(UpdateOperation.upsert_points([Point(point_id(p["product_id"]), v.tolist(), p) for p, v in points]))
    shard.flush()
    shard.close()


def old_server_collection(path, points) -> None:
    client = QdrantClient(path=str(path))
    client.create_collection("products", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    client.upsert("products", points=[models.PointStruct(id=point_id(p["product_id"]), vector=v.tolist(), payload=p)
                                      for p, v in points])
    client.close()


def old_points(n: int = 20) -> list[tuple[dict, np.ndarray]]:
    vectors = unit(n, seed=2)
    return [({"product_id": f"p{i}", "name": f"Product {i}", "version": 1,
              "metadata": {"sku": f"SKU-{1000 + i}", "shop": "a"}}, vectors[i]) for i in range(n)]


@pytest.mark.parametrize("engine", ENGINES)
def test_an_old_store_is_upgraded_and_backfilled_without_touching_its_vectors(tmp_path, engine):
    points = old_points()
    (old_edge_store if engine == "edge" else old_server_collection)(tmp_path / "q", points)
    store = open_engine(engine, tmp_path / "q", DIM)
    before = store.find([Ask(5, words="sku-1007")])[0]
    dense_before = {str(p.id): list(p.vector) for p in store.scroll(None, 100)[0]}
    filled, again = store.backfill_keywords(batch=7), store.backfill_keywords()
    after = store.find([Ask(5, words="sku-1007")])[0]
    dense_after = {str(p.id): list(p.vector) for p in store.scroll(None, 100)[0]}
    store.upsert([job("new")], unit(1, seed=99))  # a new point gets its keywords at once
    new = store.find([Ask(5, words="new")])[0]
    store.close()
    assert before == [] and (filled, again) == (20, 0)
    # "sku" is in every point's words, "1007" in one: IDF puts that one first
    assert ids(after)[0] == "p7" and after[0].score > 2 * after[1].score and ids(new) == ["new"]
    assert dense_before.keys() == dense_after.keys() and all(np.allclose(dense_before[k], dense_after[k])
                                                             for k in dense_before)


def test_clipq_store_backfill_keywords_on_an_old_embedded_folder(tmp_path):
    from test_store import clipq_store

    points = old_points()
    old_edge_store(tmp_path / "q", points)
    out = clipq_store(["backfill-keywords"], tmp_path / "q")
    assert out.returncode == 0 and "gave keywords to 20 points" in out.stderr, out.stderr
    assert "backfill-keywords" in out.stderr  # the upgrade said what to run
    stored = read_all(StoreConfig(path=str(tmp_path / "q")))
    assert all(np.allclose(stored[p["product_id"]][1], v / np.linalg.norm(v), atol=1e-5) for p, v in points)
    store = open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")
    try:
        assert ids(store.find([Ask(3, words="SKU-1013")])[0])[0] == "p13"
    finally:
        store.close()


# -- one result per product, as a pure function ---------------------------------------------------
def reads_of(points: list[str]):
    """A run over one ranked list of product ids (one per point), recording each read asked."""
    asked = []

    def run(reads):
        asked.extend(reads)
        return [[SimpleNamespace(payload={"product_id": p}) for p in points[:n]] for _, n in reads]
    return run, asked


def test_per_product_reads_deeper_until_it_has_enough_products():
    ranked = ["a"] * 70 + ["b", "a", "c", "d"]
    run, asked = reads_of(ranked)
    (found,) = per_product(run, [3])
    assert [p.payload["product_id"] for p in found] == ["a", "b", "c"]
    size = page_size(3)
    assert asked == [(0, size), (0, 2 * size), (0, 4 * size)], "from the top each time, twice as deep"


def test_per_product_misses_no_product_when_ties_come_back_in_another_order_each_read():
    """All photos of a product score the same by keywords, and the engines order ties anyhow, a
    new order each read: a product is never lost between two reads."""
    import random

    tied = ["p0"] * 41 + ["p1", "p2", "p3"]
    for seed in range(50):
        rng = random.Random(seed)

        def run(reads):
            return [[SimpleNamespace(payload={"product_id": p}) for p in rng.sample(tied, len(tied))[:n]]
                    for _, n in reads]
        (found,) = per_product(run, [10])
        assert sorted(p.payload["product_id"] for p in found) == ["p0", "p1", "p2", "p3"], seed


def test_per_product_stops_at_the_end_and_applies_keep():
    run, asked = reads_of(["a", "b", "a", "c"])
    (found,) = per_product(run, [10], keep=lambda i, payload: payload["product_id"] != "b")
    assert [p.payload["product_id"] for p in found] == ["a", "c"] and len(asked) == 1


# -- the query lane's side: a search's mode into an Ask ----------------------------------------------
class TextCounter:
    """The real encoder, recording the texts of each CLIP text pass."""

    def __init__(self, inner) -> None:
        self.inner, self.passes = inner, []

    def embed_texts(self, texts):
        self.passes.append(list(texts))
        return self.inner.embed_texts(texts)


def test_modes_become_asks_in_one_clip_pass_and_keyword_needs_none(encoder):
    from batcher.queue.messages import QueryRequest
    from batcher.search_asks import by_words

    counter = TextCounter(encoder)
    requests = [QueryRequest("text", text="red cup", mode=m, limit=3, filter={"shop": "a"})
                for m in ("vector", "keyword", "hybrid", "", "fuzzy")]
    asks, replies = by_words(counter, requests)
    vector, keyword, hybrid, unset, fuzzy = requests
    assert counter.passes == [["red cup", "red cup", "red cup"]]  # vector, hybrid and unset: one pass
    assert asks[keyword.id] == Ask(3, {"shop": "a"}, words="red cup")
    assert asks[hybrid.id].words == "red cup" and len(asks[hybrid.id].vector) == encoder.dim
    assert asks[vector.id].words == "" and asks[unset.id].words == "" and asks[unset.id].vector is not None
    assert fuzzy.id not in asks and (replies[fuzzy.id].status, replies[fuzzy.id].code) == (422, "invalid_mode")
    alone = TextCounter(encoder)
    assert list(by_words(alone, [keyword])[0]) == [keyword.id] and alone.passes == []  # no model for keywords
