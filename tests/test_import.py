"""clipq-import, run as a user runs it (the console script), against the API over HTTP and a
serving worker: a catalog of a few hundred rows with bad rows mixed in, then a resumed run."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from api.client.catalog import Item, load_catalog
from conftest import CORPUS

IMPORT = Path(sys.executable).parent / "clipq-import"
GOOD = 240


def photo(i: int) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def write_catalog(folder: Path) -> tuple[Path, dict[str, str]]:
    """A CSV catalog; returns it and {product_id: a word its failure reason holds} for bad rows."""
    (folder / "img").mkdir()
    rows, bad = [], {}
    for i in range(GOOD):
        (folder / "img" / f"{i}.jpg").write_bytes(photo(i))
        rows.append({"product_id": f"sku-{i}", "name": f"Product {i}", "metadata": json.dumps({"i": i}),
                     "image_path": f"img/{i}.jpg", "image_path_2": f"img/{i - 1}.jpg" if i == 3 else ""})
    for i in range(10):
        rows.append({"product_id": f"missing-{i}", "name": "x", "image_path": f"img/missing-{i}.jpg"})
        bad[f"missing-{i}"] = "no such file"
    for i in range(8):
        rows.append({"product_id": f"badmeta-{i}", "name": "x", "metadata": "[1, 2" if i % 2 else "[1]",
                     "image_path": "img/0.jpg"})
        bad[f"badmeta-{i}"] = "metadata"
    # the earlier row of a product is reported; the last one is sent
    rows[:0] = [{"product_id": f"sku-{i}", "name": "old", "image_path": f"img/{i + 100}.jpg"} for i in range(5)]
    for name, kind in (("text_named.jpg", "415"), ("truncated_jpeg.jpg", "")):
        (folder / "img" / name).write_bytes((CORPUS / "hostile" / name).read_bytes())
        rows.append({"product_id": f"hostile-{name}", "name": "x", "image_path": f"img/{name}"})
        bad[f"hostile-{name}"] = kind
    rows.append({"product_id": "no-photo", "name": "x"})
    bad["no-photo"] = "no photo"
    rows.append({"product_id": "", "name": "no id", "image_path": "img/1.jpg"})
    path = folder / "catalog.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["product_id", "name", "description", "metadata", "image_path",
                                               "image_url", "image_path_2"])
        writer.writeheader()
        writer.writerows(rows)
    return path, bad


def clipq_import(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(IMPORT), *map(str, args), "--no-progress"], capture_output=True, text=True,
                          timeout=600)


def failures(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_catalog_with_bad_rows_imports_the_good_ones_and_lists_the_bad(tmp_path, serve_api, serve_worker):
    catalog, bad = write_catalog(tmp_path)
    api = serve_api()
    serve_worker(worker_batch_size=32)
    state, fails = tmp_path / "state.jsonl", tmp_path / "failures.csv"
    run = clipq_import(catalog, "--api", api, "--concurrency", 16, "--wait", "--state", state,
                       "--failures", fails, "--poll", 0.2)
    assert run.returncode == 1, run.stderr  # some rows failed
    listed = failures(fails)
    by_product = {row["product_id"]: row["reason"] for row in listed}
    for product, kind in bad.items():
        assert product in by_product and kind in by_product[product], (product, by_product.get(product))
    duplicates = [row for row in listed if "duplicate product_id" in row["reason"]]
    assert sorted(row["product_id"] for row in duplicates) == [f"sku-{i}" for i in range(5)]
    assert [row for row in listed if row["product_id"] == "" and "product_id is missing" in row["reason"]]
    assert len(listed) == len(bad) + 5 + 1
    stats = httpx.get(f"{api}/api/v1/queue/stats").json()["jobs"]
    assert stats["completed"] == GOOD and stats["failed"] == 1, stats  # the truncated JPEG fails in the worker
    product = httpx.get(f"{api}/api/v1/products/sku-3", timeout=30).json()
    assert product["name"] == "Product 3"  # the last row of a duplicated product won
    assert [p["index"] for p in product["photos"]] == [0, 1]  # image_path and image_path_2
    assert f"ok={GOOD}" in run.stderr and f"failed={len(listed)}" in run.stderr, run.stderr

    # the user fixes the missing files and runs again: only what is left is sent
    for i in range(10):
        (tmp_path / "img" / f"missing-{i}.jpg").write_bytes(photo(1000 + i))
    again = clipq_import(catalog, "--api", api, "--wait", "--state", state, "--failures", fails, "--poll", 0.2)
    assert "sent=12 " in again.stderr, again.stderr  # 10 fixed rows + the 2 hostile rows, tried again
    assert f"skipped={GOOD}" in again.stderr, again.stderr
    stats = httpx.get(f"{api}/api/v1/queue/stats").json()["jobs"]
    assert stats["completed"] == GOOD + 10 and stats["total"] == GOOD + 10 + 2, stats
    assert again.returncode == 1 and not any(r["product_id"].startswith("missing-") for r in failures(fails))


def test_json_lines_catalog_rows(tmp_path):
    (tmp_path / "a.jpg").write_bytes(photo(1))
    lines = [{"product_id": "a", "name": "A", "metadata": {"k": 1}, "image_path": "a.jpg"},
             {"product_id": "u", "name": "U", "image_url": "https://shop.example/u.jpg"},
             "not an object", {"product_id": "m", "name": "M", "metadata": "{\"k\": 2}", "image_path": "a.jpg"}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    catalog = load_catalog(path)
    items = {i.product_id: i for i in catalog.items}
    assert set(items) == {"a", "u", "m"}
    assert items["a"].form["metadata"] == '{"k":1}' and items["m"].form["metadata"] == '{"k":2}'
    assert items["u"].form["image_url"] == "https://shop.example/u.jpg"
    assert items["u"].image_paths == []
    assert [(p.line, p.reason) for p in catalog.problems] == [(3, "not a JSON object"), (5, "the line is not valid JSON")]
    assert isinstance(items["a"], Item) and items["a"].key != items["m"].key


def test_a_row_with_several_photos(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(photo(len(name)))
    lines = [{"product_id": "csv-like", "name": "C", "image_path": "a.jpg", "image_path_2": "b.jpg",
              "image_url_3": "https://shop.example/3.jpg", "image_url": "https://shop.example/1.jpg"},
             {"product_id": "lists", "name": "L", "image_path": ["b.jpg", "a.jpg"]},
             {"product_id": "gone", "name": "G", "image_path": "a.jpg", "image_path_2": "nope.jpg"}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    catalog = load_catalog(path)
    items = {i.product_id: i for i in catalog.items}
    assert [p.name for p in items["csv-like"].image_paths] == ["a.jpg", "b.jpg"]
    assert items["csv-like"].form["image_url"] == ["https://shop.example/1.jpg", "https://shop.example/3.jpg"]
    assert [p.name for p in items["lists"].image_paths] == ["b.jpg", "a.jpg"]
    assert [(p.product_id, p.reason) for p in catalog.problems] == [("gone", "image_path nope.jpg: no such file")]
