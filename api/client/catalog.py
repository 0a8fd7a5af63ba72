"""A product catalog for ``clipq-import``: CSV or JSON Lines, one product a row.

Columns: ``product_id``, ``name``, ``description``, ``metadata`` (a JSON object; in JSON Lines
an object or a string holding one) and the product's photos: ``image_path`` (relative to the
catalog file) and/or ``image_url``, each with more columns for more photos, ``image_path_2``,
``image_path_3``... and ``image_url_2``... (in JSON Lines, either column may also hold a list).
At least one photo is needed; the API numbers them files first, then URLs, each kind in the
order of its columns. Each row becomes an :class:`Item` to send, or a :class:`Problem` that
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
    """One row ready to upload. ``key`` changes when the row or one of its image files changes."""

    line: int
    product_id: str
    form: dict[str, str | list[str]]  # several image_urls: a list (sent as repeated fields)
    image_paths: list[Path]
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
    paths, urls = photo_columns(row, "image_path"), photo_columns(row, "image_url")
    if not paths and not urls:
        return Problem(line, product_id, "no photo: give image_path or image_url")
    digest = hashlib.sha256(json.dumps(form, sort_keys=True).encode())
    if urls:
        form["image_url"] = urls if len(urls) > 1 else urls[0]
        digest.update("\n".join(urls).encode())
    image_paths = [(base / text).resolve() for text in paths]
    for text, image_path in zip(paths, image_paths):
        if not image_path.is_file():
            return Problem(line, product_id, f"image_path {text}: no such file")
        digest.update(image_path.read_bytes())
    return Item(line, product_id, form, image_paths, digest.hexdigest()[:32])


def photo_columns(row: dict, name: str) -> list[str]:
    """The row's values of ``name``, ``name_2``, ``name_3``... in that order, empty ones left out
    (a JSON Lines value may be a list)."""
    numbered = sorted((int(key[len(name) + 1:]), key) for key in row
                      if key.startswith(name + "_") and key[len(name) + 1:].isdigit())
    values = []
    for key in [name] + [key for _, key in numbered]:
        value = row.get(key)
        values += [str(v).strip() for v in (value if isinstance(value, list) else [value]) if v is not None]
    return [v for v in values if v]


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
