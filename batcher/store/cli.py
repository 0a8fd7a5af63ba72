"""``clipq-store``: look into, export, import and move the catalog's vector store.

It reads QDRANT_PATH / QDRANT_URL / QDRANT_COLLECTION (and the other QDRANT_* settings) like
the worker. An embedded folder has one owner: stop the worker first.

  clipq-store info                      engine, points, payload indexes, size on disk
  clipq-store export > catalog.jsonl    one JSON line per point: {"id", "vector", "payload"}
  clipq-store import < catalog.jsonl    the same lines into the store
  clipq-store copy --to-url URL         the embedded catalog into a Qdrant server: batched,
                                        resumable (run it again after a cut), counts checked
  clipq-store backfill-keywords         keyword vectors for the points stored before keyword
                                        search, from their payloads (no re-embedding)
  clipq-store backfill-hashes           a Qdrant server's perceptual-hash vectors for the photos
                                        stored before them, from their ``phash`` payloads (an
                                        embedded store needs none: it reads the payloads)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from batcher.settings import WorkerSettings
from batcher.store import StoreConfig, StoreError, open_store

BATCH = 256


def _store(config: StoreConfig, dim: int | None = None):
    return open_store(config, dim)


def records(store, batch: int = BATCH, offset: Any = None) -> Iterator[tuple[list[tuple[str, list[float], dict]], Any]]:
    """The store's points, a page at a time, with the offset of the next page (None at the end)."""
    while True:
        points, offset = store.scroll(offset, batch)
        offset = offset if offset is None or isinstance(offset, int) else str(offset)  # JSON for the progress file
        yield [(str(p.id), list(p.vector), p.payload or {}) for p in points], offset
        if offset is None:
            return


def export(store, out: TextIO) -> int:
    n = 0
    for page, _ in records(store):
        for pid, vector, payload in page:
            out.write(json.dumps({"id": pid, "vector": vector, "payload": payload}) + "\n")
        n += len(page)
    return n


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[str, list[float], dict]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            yield str(row["id"]), [float(x) for x in row["vector"]], dict(row.get("payload") or {})
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"line {number} is not a point {{\"id\", \"vector\", \"payload\"}}: {exc}") from None


def import_points(store, rows: Iterable[tuple[str, list[float], dict]], batch: int = BATCH) -> int:
    page, n = [], 0
    for row in rows:
        if len(row[1]) != store.dim:
            raise StoreError(f"point {row[0]} has a {len(row[1])}-d vector; the store holds {store.dim}-d ones")
        page.append(row)
        if len(page) == batch:
            store.write(page)
            n, page = n + len(page), []
    if page:
        store.write(page)
        n += len(page)
    return n


def copy(source, target, progress: Path, batch: int = BATCH, show=None) -> int:
    """Every point of ``source`` into ``target``, a page per write. ``progress`` records the next
    page after each write: a copy cut short starts again there (a page written twice is the
    same points). Returns the count, checked on both sides."""
    state = json.loads(progress.read_text()) if progress.exists() else {}
    offset, copied = state.get("offset"), state.get("copied", 0)
    total = source.count()
    for page, offset in records(source, batch, offset):
        if page:
            target.write(page)
        copied += len(page)
        progress.write_text(json.dumps({"offset": offset, "copied": copied}))
        if show:
            show(copied, total)
    stored = target.count()
    if stored < total:
        raise StoreError(f"the copy holds {stored} points of {total}: run the command again to resume")
    progress.unlink()
    return stored


def _bar(done: int, total: int) -> None:
    width = 40
    filled = width * done // max(total, 1)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} points", end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipq-store", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="engine, points, payload indexes, size on disk")
    sub.add_parser("export", help="JSON lines on stdout")
    imp = sub.add_parser("import", help="JSON lines from stdin (or --file) into the store")
    imp.add_argument("--file", type=Path)
    cp = sub.add_parser("copy", help="the store's points into another store")
    target = cp.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-url", help="a Qdrant server (QDRANT_API_KEY is sent to it)")
    target.add_argument("--to-path", help="another embedded folder")
    cp.add_argument("--to-collection", help="default: QDRANT_COLLECTION")
    cp.add_argument("--batch", type=int, default=BATCH)
    sub.add_parser("backfill-keywords", help="keyword vectors for points stored without them")
    sub.add_parser("backfill-hashes", help="perceptual-hash vectors for photos stored with a hash but without one")
    a = p.parse_args(argv)
    config = WorkerSettings.from_env().store
    try:
        return _run(a, config)
    except StoreError as exc:
        print(f"clipq-store: {exc}", file=sys.stderr)
        return 2


def _run(a, config: StoreConfig) -> int:
    if a.command == "import":
        rows = parse_lines(a.file.open() if a.file else sys.stdin)
        first = next(rows, None)
        if first is None:
            print("nothing to import", file=sys.stderr)
            return 0
        store = _store(config, len(first[1]))
        try:
            n = import_points(store, [first, *rows])
        finally:
            store.close()
        print(f"imported {n} points", file=sys.stderr)
        return 0
    store = _store(config)
    try:
        if a.command == "info":
            print(json.dumps(store.info(), indent=2))
        elif a.command == "export":
            print(f"exported {export(store, sys.stdout)} points", file=sys.stderr)
        elif a.command == "backfill-keywords":
            print(f"gave keywords to {store.backfill_keywords(BATCH)} points", file=sys.stderr)
        elif a.command == "backfill-hashes" and store.engine == "edge":
            print("the embedded store needs no hash vectors: its near-duplicate lookup reads every photo's "
                  "`phash` payload (nothing to do)", file=sys.stderr)
        elif a.command == "backfill-hashes":
            print(f"gave hash vectors to {store.backfill_hashes(BATCH)} points", file=sys.stderr)
        else:
            dest = replace(config, url=a.to_url, path=a.to_path or config.path,
                           collection=a.to_collection or config.collection)
            target = _store(dest, store.dim)
            key = hashlib.sha256(f"{a.to_url}|{a.to_path}|{dest.collection}".encode()).hexdigest()[:12]
            progress = Path(f"{config.path}.copy-{key}.json")
            try:
                n = copy(store, target, progress, a.batch, _bar)
            finally:
                target.close()
            print(f"\ncopied {n} points; the counts match", file=sys.stderr)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
