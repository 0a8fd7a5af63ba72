"""Upgrade an embedded folder written by release 0.1 (qdrant-client's local mode: ``meta.json``,
``collection/<name>/storage.sqlite``) into Qdrant Edge, at the worker's start.

Every collection's points are copied, vectors and payloads as they are, into
``<folder>.upgrading``; the counts are checked; then the old folder is renamed
``<folder>.local-0.1`` (kept until the user deletes it) and the new one takes its name.
Each step can be cut short by a crash: until the copy is complete (``.complete`` written),
the old folder is untouched and the next start begins again; after it, the next start
finishes the renames. A folder with no ``meta.json`` is left as it is, so a second start
does nothing.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from batcher.store.base import StoreError, StoreLocked
from batcher.store.config import StoreConfig
from batcher.store.edge import EdgeStore
from batcher.store.edge_folder import open_shard

log = logging.getLogger(__name__)
LEGACY_SUFFIX = ".local-0.1"
COMPLETE = ".complete"
BATCH = 256


def is_local_mode_folder(root: Path) -> bool:
    return (root / "meta.json").is_file()


def upgrade_local_folder(config: StoreConfig, dim: int, model: str = "") -> dict[str, int] | None:
    """Convert ``config.path`` if release 0.1 wrote it; the points copied per collection, or None."""
    root = Path(config.path)
    work = root.with_name(root.name + ".upgrading")
    if (work / COMPLETE).exists():
        counts = json.loads((work / COMPLETE).read_text())
        _swap(root, work)
        return counts
    if not is_local_mode_folder(root):
        return None
    shutil.rmtree(work, ignore_errors=True)  # what a crashed conversion left
    t0 = time.perf_counter()
    counts = _copy_collections(root, work, config, dim, model)
    (work / COMPLETE).write_text(json.dumps(counts))
    legacy = _swap(root, work)
    log.info("upgraded %s from release 0.1 (qdrant-client local mode) to Qdrant Edge in %.1fs: %d points (%s); "
             "the old folder is kept as %s until you delete it", root, time.perf_counter() - t0,
             sum(counts.values()), ", ".join(f"{k}: {v}" for k, v in counts.items()) or "no collections", legacy)
    return counts


def _copy_collections(root: Path, work: Path, config: StoreConfig, dim: int, model: str) -> dict[str, int]:
    from qdrant_client import QdrantClient  # only an upgrade reads the old format

    try:
        client = QdrantClient(path=str(root))
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise StoreLocked(f"the release 0.1 folder {root} is opened by another process: stop it, then "
                              "start this worker again to upgrade the folder") from None
        raise StoreError(f"cannot read the release 0.1 folder {root} to upgrade it: {exc}") from None
    counts = {}
    try:
        for collection in client.get_collections().collections:
            name = collection.name
            size = client.get_collection(name).config.params.vectors.size
            target = replace(config, collection=name)
            store = EdgeStore(open_shard(work / name, target, size, model if size == dim else ""),
                              work / name, target, size)
            try:
                counts[name] = _copy(client, name, store)
            finally:
                store.close()
    finally:
        client.close()
    return counts


def _copy(client, name: str, store: EdgeStore) -> int:
    offset, copied = None, 0
    while True:
        points, offset = client.scroll(name, offset=offset, limit=BATCH, with_payload=True, with_vectors=True)
        store.write([(p.id, list(p.vector), p.payload or {}) for p in points])
        copied += len(points)
        if offset is None:
            break
    expected, stored = client.count(name, exact=True).count, store.count()
    if not expected == stored == copied:
        raise StoreError(f"upgrading collection {name}: {expected} points in the old folder, {copied} copied, "
                         f"{stored} in the new store; the old folder is untouched")
    return stored


def _swap(root: Path, work: Path) -> Path:
    """Old folder aside, new folder in its place; safe to run again after a crash."""
    legacy = root.with_name(root.name + LEGACY_SUFFIX)
    if is_local_mode_folder(root):
        if legacy.exists():
            legacy = legacy.with_name(f"{legacy.name}-{int(time.time())}")
        root.rename(legacy)
    work.rename(root)
    (root / COMPLETE).unlink()
    return legacy
