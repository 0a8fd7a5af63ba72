"""The embedded store on Qdrant Edge: its folder, its upgrade from release 0.1, its index builds,
its durability under SIGKILL, and ``clipq-store``. Real engines on real folders throughout."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from batcher.queue.jobs import Job
from batcher.store import StoreConfig, StoreError, StoreLocked, open_store, point_id
from batcher.store.cli import copy, export, import_points, parse_lines, records
from batcher.store.upgrade import LEGACY_SUFFIX
from conftest import ROOT, open_engine

DIM = 8


def job(product_id: str, version: int = 1, **metadata) -> Job:
    return Job(f"job-{product_id}-{version}", product_id, f"name {product_id}", "", metadata, f"sha-{product_id}",
               0, 0, version=version)


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_release_01_folder(root, n: int, collection: str = "products") -> dict[str, tuple[dict, np.ndarray]]:
    """A folder as release 0.1's worker left it: qdrant-client's local mode (meta.json, sqlite)."""
    client = QdrantClient(path=str(root))
    client.create_collection(collection, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    vectors, points = unit(n), {}
    for i in range(n):
        payload = {"product_id": f"sku-{i}", "name": f"Product {i}", "version": i + 1, "metadata": {"shop": "a"}}
        points[f"sku-{i}"] = (payload, vectors[i])
    client.upsert(collection, points=[models.PointStruct(id=point_id(p), vector=v.tolist(), payload=pl)
                                      for p, (pl, v) in points.items()])
    client.close()
    return points


def read_all(config: StoreConfig) -> dict[str, tuple[dict, np.ndarray]]:
    store = open_store(config, None)
    try:
        return {p["product_id"]: (p, np.asarray(v, np.float32)) for page, _ in records(store) for _, v, p in page}
    finally:
        store.close()


# -- the folder ------------------------------------------------------------------------------
def test_a_second_process_is_refused_and_the_message_names_the_folder(tmp_path):
    first = open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")
    try:
        with pytest.raises(StoreLocked, match=str(tmp_path / "q" / "products")):
            open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")
    finally:
        first.close()


def test_a_folder_that_is_no_store_is_refused_and_left_as_it_is(tmp_path):
    folder = tmp_path / "q" / "products"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=f"{folder}.*does not create a store over it"):
        open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_half_written_store_is_refused_not_replaced_by_an_empty_one(tmp_path):
    store = open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")
    store.upsert([job("a")], unit(1))
    store.close()
    folder = tmp_path / "q" / "products"
    (folder / "edge_config.json").write_text('{"vectors": ')  # cut short
    with pytest.raises(StoreError, match=f"{folder} is corrupt"):
        open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")
    for segment in (folder / "segments").iterdir():  # the data itself is gone
        for f in segment.rglob("*"):
            if f.is_file():
                f.write_bytes(b"\0garbage")
    (folder / "edge_config.json").write_text(json.dumps({"vectors": {"": {"size": DIM, "distance": "Cosine"}}}))
    with pytest.raises(StoreError, match=f"cannot open the embedded store {folder}"):
        open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")


def test_a_folder_of_another_vector_size_or_model_is_a_clear_error(tmp_path):
    open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "ViT-B-32").close()
    with pytest.raises(StoreError, match="holds 8-d vectors but the model makes 16-d ones"):
        open_store(StoreConfig(path=str(tmp_path / "q")), 16, "ViT-B-32")
    with pytest.raises(StoreError, match="vectors of the model ViT-B-32, not ViT-L-14"):
        open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "ViT-L-14")


def test_memory_is_a_temporary_folder_removed_at_close():
    store = open_store(StoreConfig(path=":memory:"), DIM, "m")
    folder = store.folder
    store.upsert([job("a")], unit(1))
    assert store.get("a")["name"] == "name a"
    store.close()
    assert not folder.exists()


# -- searches and index builds ------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["edge", "server"])
def test_true_and_false_filters_fill_the_limit_with_matching_points(tmp_path, engine):
    """The 20 points nearest the query are all on sale; a search for the others reads past them."""
    store = open_engine(engine, tmp_path / "q", DIM)
    query = unit(1, seed=9)[0]
    vectors = np.stack([query + 0.01 * i * unit(1, seed=i)[0] for i in range(30)])
    store.upsert([job(f"p{i}", sale=i < 20, nested={"ok": i % 2 == 0}) for i in range(30)], vectors)
    (hits,), (nested,) = store.search(query[None], [5], [{"sale": False}]), store.search(query[None], [3], [{"nested.ok": True}])
    store.close()
    cosine = vectors @ query / np.linalg.norm(vectors, axis=1)
    nearest = [f"p{i}" for i in np.argsort(-cosine)]
    assert [h.product_id for h in hits] == [p for p in nearest if int(p[1:]) >= 20][:5]
    assert [h.product_id for h in nested] == [p for p in nearest if int(p[1:]) % 2 == 0][:3]


def test_segments_get_their_index_one_at_a_time_and_searches_stay_exact_enough(tmp_path, caplog):
    caplog.set_level(logging.INFO, "batcher.store.edge")
    store = open_store(StoreConfig(path=str(tmp_path / "q"), segment_points=1000), DIM, "m")
    vectors = unit(2600, seed=3)
    for start in range(0, 2600, 100):
        store.upsert([job(f"p{i}") for i in range(start, start + 100)], vectors[start:start + 100])
    info = store.info()
    assert info["points"] == 2600 and 2000 <= info["indexed_vectors"] < 2600, info
    assert sum("built the HNSW index" in r.message for r in caplog.records) == 2
    assert {"product_id", "image_sha256", "version", "embedder"} <= set(info["payload_indexes"])
    for i in (5, 1500, 2555):  # an exact copy of a stored vector finds its product first
        assert store.search(vectors[i][None], [1], [{}])[0][0].product_id == f"p{i}"
    store.close()


# -- durability ------------------------------------------------------------------------------------
WRITER = """
import sys, numpy as np
from batcher.queue.jobs import Job
from batcher.store import StoreConfig, open_store
store = open_store(StoreConfig(path=sys.argv[1]), 8, "m")
rng = np.random.default_rng(0)
for b in range(10_000):
    jobs = [Job(f"j{b}-{k}", f"p{b}-{k}", "", "", {}, "", 0, 0, version=1) for k in range(8)]
    store.upsert(jobs, rng.standard_normal((8, 8)).astype(np.float32))
    print(b, flush=True)  # acknowledged: the worker would ack these jobs now
"""


def test_every_acknowledged_upsert_survives_a_sigkill(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "q")], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    acked = -1
    deadline = time.monotonic() + 60
    while acked < 40 and time.monotonic() < deadline:
        acked = int(proc.stdout.readline() or acked)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert acked >= 40
    stored = read_all(StoreConfig(path=str(tmp_path / "q")))
    missing = [f"p{b}-{k}" for b in range(acked + 1) for k in range(8) if f"p{b}-{k}" not in stored]
    assert not missing, missing[:5]


# -- upgrading a release 0.1 folder -----------------------------------------------------------------
def test_a_release_01_folder_is_converted_once_and_kept_beside(tmp_path, caplog):
    caplog.set_level(logging.INFO, "batcher.store.upgrade")
    root = tmp_path / "qdrant"
    before = write_release_01_folder(root, 300)
    after = read_all(StoreConfig(path=str(root)))
    assert set(after) == set(before)
    for pid, (payload, vector) in before.items():
        assert after[pid][0] == payload and np.allclose(after[pid][1], vector, atol=1e-6)
    assert any("300 points" in r.message and "upgraded" in r.message for r in caplog.records)
    legacy = tmp_path / ("qdrant" + LEGACY_SUFFIX)
    old = QdrantClient(path=str(legacy))  # kept, and still readable by release 0.1
    assert old.count("products").count == 300
    old.close()
    caplog.clear()
    assert set(read_all(StoreConfig(path=str(root)))) == set(before)  # a second start does nothing
    assert not any("upgraded" in r.message for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qdrant", "qdrant" + LEGACY_SUFFIX]


def test_a_conversion_cut_short_leaves_the_old_folder_usable_and_is_done_again(tmp_path):
    root = tmp_path / "qdrant"
    before = write_release_01_folder(root, 120)
    partial = open_store(StoreConfig(path=str(tmp_path / "qdrant.upgrading")), DIM)  # what a crash leaves
    partial.upsert([job("sku-0")], unit(1, seed=5))
    partial.close()
    old = QdrantClient(path=str(root))
    assert old.count("products").count == 120  # release 0.1 could still run on it
    old.close()
    after = read_all(StoreConfig(path=str(root)))
    assert set(after) == set(before) and after["sku-0"][0] == before["sku-0"][0]


def test_a_conversion_cut_between_its_renames_is_finished_at_the_next_start(tmp_path):
    from batcher.store.upgrade import _copy_collections, COMPLETE

    root, work = tmp_path / "qdrant", tmp_path / "qdrant.upgrading"
    before = write_release_01_folder(root, 50)
    counts = _copy_collections(root, work, StoreConfig(path=str(root)), DIM, "")
    (work / COMPLETE).write_text(json.dumps(counts))
    root.rename(tmp_path / ("qdrant" + LEGACY_SUFFIX))  # the crash came after the first rename
    assert set(read_all(StoreConfig(path=str(root)))) == set(before)
    assert not work.exists()


# -- clipq-store ------------------------------------------------------------------------------------
def clipq_store(args: list[str], path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, QDRANT_PATH=str(path))
    return subprocess.run([sys.executable, "-m", "batcher.store.cli", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_clipq_store_info_export_and_import_round_trip(tmp_path):
    store = open_store(StoreConfig(path=str(tmp_path / "a")), DIM, "m")
    store.upsert([job(f"p{i}", shop="x") for i in range(40)], unit(40))
    store.close()
    info = clipq_store(["info"], tmp_path / "a")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["points"] == 40 and facts["disk_bytes"] > 0 and "Edge" in facts["engine"]
    dump = clipq_store(["export"], tmp_path / "a")
    lines = dump.stdout.splitlines()
    assert len(lines) == 40 and set(json.loads(lines[0])) == {"id", "vector", "payload"}
    loaded = clipq_store(["import"], tmp_path / "b", stdin=dump.stdout)
    assert loaded.returncode == 0 and "imported 40 points" in loaded.stderr
    a, b = read_all(StoreConfig(path=str(tmp_path / "a"))), read_all(StoreConfig(path=str(tmp_path / "b")))
    assert a.keys() == b.keys() and all(a[k][0] == b[k][0] and np.allclose(a[k][1], b[k][1]) for k in a)


def test_clipq_store_refuses_a_running_workers_folder_and_bad_lines(tmp_path):
    running = open_store(StoreConfig(path=str(tmp_path / "a")), DIM, "m")
    try:
        out = clipq_store(["info"], tmp_path / "a")
        assert out.returncode == 2 and "already opened by another worker" in out.stderr
    finally:
        running.close()
    out = clipq_store(["info"], tmp_path / "none")
    assert out.returncode == 2 and "there is no embedded store in" in out.stderr
    assert not (tmp_path / "none").exists()  # looking creates nothing
    out = clipq_store(["import"], tmp_path / "b", stdin='{"id": "x", "vector": [1, 2]}\nnot json\n')
    assert out.returncode == 2 and "line 2 is not a point" in out.stderr
    with pytest.raises(StoreError, match="has a 3-d vector; the store holds 8-d ones"):
        import_points(open_engine("edge", tmp_path / "c", DIM), parse_lines(['{"id": 1, "vector": [1, 2, 3]}']))


class CutAfter:
    """A target store whose connection drops after ``pages`` writes (a cut copy)."""

    def __init__(self, inner, pages: int) -> None:
        self.inner, self.pages = inner, pages

    def write(self, points) -> None:
        if self.pages == 0:
            raise ConnectionError("connection lost")
        self.pages -= 1
        self.inner.write(points)


def test_a_copy_to_a_server_store_resumes_where_it_was_cut_and_checks_the_counts(tmp_path):
    """The server code path on qdrant-client's in-process mode: no Qdrant server runs here."""
    source = open_engine("edge", tmp_path / "a", DIM)
    source.upsert([job(f"p{i}") for i in range(700)], unit(700))
    target = open_engine("server", tmp_path / "server", DIM)
    progress = tmp_path / "progress.json"
    with pytest.raises(ConnectionError):
        copy(source, CutAfter(target, pages=2), progress, batch=100)
    assert json.loads(progress.read_text())["copied"] == 200
    seen = []
    assert copy(source, target, progress, batch=100, show=lambda done, total: seen.append((done, total))) == 700
    assert seen[0] == (300, 700) and seen[-1] == (700, 700) and not progress.exists()
    got = {r.payload["product_id"] for r in target.client.scroll("products", limit=1000)[0]}
    assert got == {f"p{i}" for i in range(700)}
    source.close()
    target.close()


def test_clipq_store_copy_moves_a_catalog_to_another_store(tmp_path):
    source = open_store(StoreConfig(path=str(tmp_path / "a")), DIM, "m")
    source.upsert([job(f"p{i}") for i in range(300)], unit(300))
    with open(tmp_path / "dump.jsonl", "w") as out:
        assert export(source, out) == 300
    source.close()
    out = clipq_store(["copy", "--to-path", str(tmp_path / "b"), "--batch", "64"], tmp_path / "a")
    assert out.returncode == 0 and "copied 300 points; the counts match" in out.stderr, out.stderr
    assert "300/300 points" in out.stderr
    assert set(read_all(StoreConfig(path=str(tmp_path / "b")))) == {f"p{i}" for i in range(300)}
