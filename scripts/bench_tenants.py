"""What tenants cost: a key's lookup among N tenants, and the tenant filter on every search.

1. ``TenantBook.resolve`` (sha256 of the key once, then a constant-time compare with every
   tenant's digest, no early exit) for 10, 1,000 and 10,000 tenants: microseconds per call,
   for a known key and an unknown one (the same work, by design).
2. An Edge store (``open_store``, as the worker opens it) of ``--points`` CLIP-like 512-d vectors
   (``bench_store``'s mixture of 1,000 centres), with recall@10 against the exact top 10: half
   stored as before tenants (no ``tenant`` in the payload), the rest spread over ``--tenants``
   tenants. ``--queries`` nearest-10 queries, one at a time, through Edge's batched query as
   the store sends it: with no filter (the search before tenants), with the default tenant's
   filter (``tenant == "default"`` or no ``tenant``: the old points), and with one small
   tenant's. p50 and p99 in ms.

    .venv/bin/python -m scripts.bench_tenants --points 20000 --tenants 10 --json /tmp/bench_tenants.json
"""
from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
import time
from dataclasses import replace

import numpy as np
from qdrant_edge import QueryBatchRequest

from api.tenants import Tenant, TenantBook, digest
from batcher.queue.jobs import Job
from batcher.store import StoreConfig, open_store
from batcher.store.asks import Ask
from batcher.store.edge_filters import conditions
from batcher.store.edge_queries import request
from batcher.store.points import point_id
from scripts.bench_store import DIM, Mixture
from scripts.lib.report import commit, machine_info, write_json
from scripts.lib.stats import summary_ms



def resolve_us(n: int, calls: int = 2000) -> dict[str, float]:
    keys = [secrets.token_hex(16) for _ in range(n)]
    book = TenantBook({f"t{i}": Tenant(f"t{i}", digest(k).hex()) for i, k in enumerate(keys)}, [], [])
    out = {}
    for name, key in (("known", keys[n // 2]), ("unknown", "nobody-holds-this")):
        t0 = time.perf_counter()
        for _ in range(calls):
            book.resolve(key)
        out[f"{name}_us"] = round((time.perf_counter() - t0) / calls * 1e6, 1)
    return out


def load(store, vectors: np.ndarray, tenants: int) -> None:
    points = len(vectors)
    old = points // 2
    for start in range(0, old, 256):  # as stored before tenants: no tenant field
        store.write([(point_id(f"p{i}"), vectors[i].tolist(), {"product_id": f"p{i}", "name": f"p{i}", "version": 1})
                     for i in range(start, min(start + 256, old))])
    base = Job("", "", "", "", {}, "", 0, 0, version=1)
    for start in range(old, points, 32):
        jobs = [replace(base, job_id=f"j{i}", product_id=f"p{i}", tenant=f"shop-{i % tenants}")
                for i in range(start, min(start + 32, points))]
        store.upsert(jobs, vectors[start:start + len(jobs)])


def members(points: int, tenants: int, tenant: str | None) -> np.ndarray:
    """The indexes of the points a search of ``tenant`` may find (None: every point)."""
    i, old = np.arange(points), points // 2
    if tenant is None:
        return i
    return i[:old] if tenant == "default" else i[old:][i[old:] % tenants == int(tenant.split("-")[1])]


def search_ms(store, vectors: np.ndarray, queries: np.ndarray, tenant: str | None, tenants: int) -> dict:
    """p50/p99 of nearest-10 searches, and their recall@10 against the exact top 10 of the tenant's points."""
    flt = None if tenant is None else conditions({}, "", tenant)[0]
    mine = members(len(vectors), tenants, tenant)
    times, hits = [], 0
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        (found,) = store.shard.query_batch(QueryBatchRequest([request(Ask(10, vector=q.tolist()), flt, 10, 0,
                                                                      store.params)]))
        if i >= 3:  # warm-up left out
            times.append(time.perf_counter() - t0)
            exact = mine[np.argsort(-(vectors[mine] @ q))[:10]]
            hits += len({f"p{j}" for j in exact} & {p.payload["product_id"] for p in found})
    return summary_ms(times, with_max=False) | {"recall_at_10": round(hits / (10 * (len(queries) - 3)), 3)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=20_000)
    p.add_argument("--tenants", type=int, default=10)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    out = {"commit": commit(), "machine": machine_info(), "resolve": {n: resolve_us(n) for n in (10, 1000, 10_000)}}
    print("key lookup:", out["resolve"], flush=True)
    mixture = Mixture(0)
    folder = tempfile.mkdtemp(prefix="bench-tenants-")
    try:
        store = open_store(StoreConfig(path=folder), DIM, "bench", "")
        t0 = time.perf_counter()
        vectors = mixture.draw(args.points)
        load(store, vectors, args.tenants)
        out["load_s"] = round(time.perf_counter() - t0, 1)
        queries = mixture.draw(args.queries + 3)
        out["search"] = {name: search_ms(store, vectors, queries, tenant, args.tenants)
                         for name, tenant in (("no filter (before tenants)", None), ("default tenant", "default"),
                                              ("one tenant", "shop-3"))}
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out["config"] = vars(args)
    print("search:", out["search"], flush=True)
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
