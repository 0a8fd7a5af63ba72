"""A product catalog for ``clipq-import``: CSV or JSON Lines, one product a row.

Columns: ``product_id``, ``name``, ``description``, ``metadata`` (a JSON object; in JSON Lines
an object or a string holding one) and exactly one of ``image_path`` (relative to the catalog
file) or ``image_url``. Each row becomes an :class:`Item` to send, or a :class:`Problem` that
says why it cannot be sent; reading never stops at a bad row.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Item:
    """One row ready to upload. ``key`` changes when the row or its image file changes."""

    line: int
    product_id: str
    form: dict[str, str]
    image_path: Path | None
    key: str


@dataclass(frozen=True)
class Problem:
    line: int
    product_id: str
    reason: str


@dataclass
class Catalog:
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs; a JSON Lines row that is not an object becomes an empty row."""
    with open(path, newline="", encoding="utf-8") as f:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            rows = []
            for number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        row = {"__error__": "the line is not valid JSON"}
                    rows.append((number, row if isinstance(row, dict) else {"__error__": "not a JSON object"}))
            return rows
        return [(number, row) for number, row in enumerate(csv.DictReader(f), start=2)]


def _metadata(value) -> str:
    """The metadata as the JSON text the API takes; ValueError when it is not an object."""
    if value in (None, ""):
        return "{}"
    obj = json.loads(value) if isinstance(value, str) else value
    if not isinstance(obj, dict):
        raise ValueError("metadata must be a JSON object")
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def to_item(line: int, row: dict, base: Path) -> Item | Problem:
    product_id = str(row.get("product_id") or "").strip()
    if "__error__" in row:
        return Problem(line, product_id, row["__error__"])
    if not product_id:
        return Problem(line, "", "product_id is missing")
    try:
        form = {"product_id": product_id, "name": str(row.get("name") or ""),
                "description": str(row.get("description") or ""), "metadata": _metadata(row.get("metadata"))}
    except ValueError as exc:
        return Problem(line, product_id, f"metadata: {exc}")
    path_text, url = str(row.get("image_path") or "").strip(), str(row.get("image_url") or "").strip()
    if bool(path_text) == bool(url):
        return Problem(line, product_id, "exactly one of image_path and image_url is needed")
    digest = hashlib.sha256(json.dumps(form, sort_keys=True).encode())
    image_path = None
    if url:
        form["image_url"] = url
        digest.update(url.encode())
    else:
        image_path = (base / path_text).resolve()
        if not image_path.is_file():
            return Problem(line, product_id, f"image_path {path_text}: no such file")
        digest.update(image_path.read_bytes())
    return Item(line, product_id, form, image_path, digest.hexdigest()[:32])


def load_catalog(path: Path) -> Catalog:
    """Every row as an item or a problem. Of several rows of one product the last one is sent
    (the API's rule too: the last upload wins); the earlier ones are reported."""
    catalog = Catalog()
    last: dict[str, int] = {}
    parsed = [to_item(line, row, path.parent) for line, row in read_rows(path)]
    for i, entry in enumerate(parsed):
        if isinstance(entry, Item):
            last[entry.product_id] = i
    for i, entry in enumerate(parsed):
        if isinstance(entry, Problem):
            catalog.problems.append(entry)
        elif last[entry.product_id] != i:
            winner = parsed[last[entry.product_id]].line
            catalog.problems.append(Problem(entry.line, entry.product_id,
                                            f"duplicate product_id: line {winner} of the catalog wins"))
        else:
            catalog.items.append(entry)
    return catalog
