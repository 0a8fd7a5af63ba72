"""The embedded store's folder: a Qdrant Edge shard, created with clipq's settings, or loaded
after checks that refuse what is not a store of this model's vectors (a half-written or foreign
folder, another vector size, another model), with a message that names the folder."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from qdrant_edge import (Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParams,
                         HnswIndexConfig, KeywordIndexParams, Memory, Modifier, PayloadSchemaType,
                         ScalarQuantizationConfig, ScalarType, UpdateOperation)

from batcher.store.base import StoreError, StoreLocked
from batcher.store.config import StoreConfig
from batcher.store.hash_vector import PHASH
from batcher.store.keywords import KEYWORDS
from batcher.store.points import INDEXED_INTEGERS, INDEXED_KEYWORDS, TENANT

log = logging.getLogger(__name__)
MARKER = "clipq.json"  # which model's vectors the folder holds
SHARD_FILE = "edge_config.json"  # written by Edge when it creates a shard


def segment_kb(config: StoreConfig, dim: int) -> int:
    """``segment_points`` as Edge's optimizer counts: kilobytes of float32 CLIP vectors."""
    return max(1, config.segment_points * dim * 4 // 1024)


def new_shard_config(config: StoreConfig, dim: int) -> EdgeConfig:
    quantization = (ScalarQuantizationConfig(ScalarType.Int8, quantile=0.99) if config.quantization == "int8"
                    else None)
    kb = segment_kb(config, dim)
    return EdgeConfig(
        vectors={"": EdgeVectorParams(size=dim, distance=Distance.Cosine, quantization_config=quantization,
                                      memory=Memory.Cold if config.vectors_on_disk else Memory.Cached)},
        sparse_vectors={KEYWORDS: EdgeSparseVectorParams(modifier=Modifier.Idf)},
        hnsw_config=HnswIndexConfig(m=config.hnsw_m, ef_construct=config.hnsw_ef_construct,
                                    full_scan_threshold=10_000),
        optimizers=EdgeOptimizersConfig(indexing_threshold=kb, max_segment_size=kb))


def ensure_indexes(shard: EdgeShard, indexed_fields: list[str]) -> None:
    """The payload indexes every store has, and those of ``QDRANT_INDEXED_FIELDS``; ``tenant``
    marked as the tenant key (Edge keeps each tenant's points together)."""
    have = set(shard.info().payload_schema)
    wanted = {**{f: PayloadSchemaType.Keyword for f in INDEXED_KEYWORDS},
              **{f: PayloadSchemaType.Integer for f in INDEXED_INTEGERS},
              **{f"metadata.{f}": PayloadSchemaType.Keyword for f in indexed_fields},
              TENANT: KeywordIndexParams(is_tenant=True)}
    for field, schema in wanted.items():
        if field not in have:
            shard.update(UpdateOperation.create_field_index(field, schema))


def stored_dim(folder: Path) -> int | None:
    """The vector size of the store in ``folder``; None if there is none."""
    try:
        return int(json.loads((folder / SHARD_FILE).read_text())["vectors"][""]["size"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"the embedded store {folder} is corrupt ({SHARD_FILE} unreadable: {exc})") from None


def has_keywords(folder: Path) -> bool:
    """Whether the store was made with the keywords' sparse vector (stores made before it lack it)."""
    return KEYWORDS in json.loads((folder / SHARD_FILE).read_text()).get("sparse_vectors", {})


def has_hash_vector(folder: Path) -> bool:
    """Whether the store has a perceptual-hash vector (those made before the lookup in memory do)."""
    return PHASH in json.loads((folder / SHARD_FILE).read_text()).get("vectors", {})


def drop_hash_vector(shard: EdgeShard, folder: Path) -> None:
    """An embedded store finds near duplicates in memory (``hash_index``), from the ``phash``
    payloads: the hash vector of a store made before is deleted, and its HNSW graph with
    it (built in each segment beside the CLIP one, it lengthened each build: a pause of the
    worker)."""
    shard.update(UpdateOperation.delete_vector_name(PHASH))
    log.info("the embedded store %s: deleted its perceptual-hash vectors (the lookup reads the payloads)", folder)


def add_keywords(shard: EdgeShard, folder: Path) -> None:
    """Give a store made before keyword search its sparse vector: new points get keywords at
    once; the points already there get theirs from ``clipq-store backfill-keywords``."""
    shard.update(UpdateOperation.create_sparse_vector(KEYWORDS, Modifier.Idf))
    log.warning("the embedded store %s had no keyword vectors: added them; run `clipq-store backfill-keywords` "
                "so that keyword and hybrid searches find the products stored before", folder)


def _check_folder(folder: Path, dim: int, model: str) -> None:
    """Refuse a folder that is not a store of this model's vectors, with a message naming it."""
    if not (folder / SHARD_FILE).exists():
        raise StoreError(f"{folder} is not empty but holds no Qdrant Edge store ({SHARD_FILE} is missing): it may "
                         "be half-written or something else. The worker does not create a store over it: move it "
                         "away, or set QDRANT_PATH / QDRANT_COLLECTION to another folder.")
    size = stored_dim(folder)
    try:
        made = json.loads((folder / MARKER).read_text()) if (folder / MARKER).exists() else {}
    except (OSError, ValueError) as exc:
        raise StoreError(f"the embedded store {folder} is corrupt ({MARKER} unreadable: {exc})") from None
    if size != dim:
        raise StoreError(f"the embedded store {folder} holds {size}-d vectors but the model makes {dim}-d ones: "
                         "use another QDRANT_COLLECTION (or QDRANT_PATH) for this model")
    if made.get("model") and model and made["model"] != model:
        raise StoreError(f"the embedded store {folder} holds vectors of the model {made['model']}, not {model}: "
                         "its searches would compare unlike vectors; use another QDRANT_COLLECTION (or QDRANT_PATH)")


def open_shard(folder: Path, config: StoreConfig, dim: int, model: str) -> EdgeShard:
    """Load the shard in ``folder``, or create it there if the folder is empty or missing."""
    fresh = not folder.exists() or not any(folder.iterdir())
    if not fresh:
        _check_folder(folder, dim, model)
    try:
        if fresh:
            folder.mkdir(parents=True, exist_ok=True)
            shard = EdgeShard.create(str(folder), new_shard_config(config, dim))
            log.info("created the embedded store %s (%d-d, cosine, Qdrant Edge)", folder, dim)
        else:
            shard = EdgeShard.load(str(folder))  # as created: its segment size and HNSW settings
    except Exception as exc:  # Edge raises plain Exceptions
        if "WouldBlock" in str(exc):
            raise StoreLocked(
                f"the embedded store {folder} is already opened by another worker or process: one process owns "
                "an embedded folder (stop the worker before `clipq-store`). To run several workers, run a Qdrant "
                "server and set QDRANT_URL for all of them.") from None
        raise StoreError(f"cannot open the embedded store {folder}: {exc}. The folder may be corrupt or "
                         "half-written; the worker does not create an empty store over it.") from None
    if not (folder / MARKER).exists():
        (folder / MARKER).write_text(json.dumps({"model": model, "dim": dim}) + "\n")
    return shard
