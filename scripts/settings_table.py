#!/usr/bin/env python3
"""The configuration reference, generated from the settings classes (the single source of truth).

Run from the repository root:

    python -m scripts.settings_table           # print the tables
    python -m scripts.settings_table --write   # rewrite them in deploy/configuration.md

The tables are grouped by stage, one sub-heading per group. ``--write`` replaces only what
lies between the two markers of deploy/configuration.md; a test compares that block with
``table()``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from api.settings import ApiSettings
from batcher.queue.config import QueueSettings
from batcher.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "deploy" / "configuration.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"

# (heading, names or prefixes) in the order a request meets them. A name ending in "_" is a
# prefix. A variable that matches no group falls into "Other API settings" or "Other worker
# settings", so a new setting is never left out.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Redis and the queue (API and worker)",
     ("REDIS_URL", "REDIS_CLUSTER", "QUEUE_NAMESPACE", "JOB_TTL", "FAILED_JOB_TTL", "FAILED_IMAGE_TTL",
      "LOG_LEVEL")),
    ("Image limits (API and worker)", ("MAX_UPLOAD_BYTES", "MAX_IMAGE_PIXELS")),
    ("API: access", ("API_KEY", "ALLOW_ANONYMOUS", "CORS_ORIGINS")),
    ("API: uploads and back-pressure",
     ("MAX_QUEUE_DEPTH", "MAX_QUEUE_BYTES", "MAX_METADATA_", "UPLOAD_READ_TIMEOUT")),
    ("API: searches and Redis calls",
     ("MAX_PENDING_QUERIES", "SEARCH_TIMEOUT", "REDIS_TIMEOUT", "REDIS_MAX_CONNECTIONS")),
    ("Worker: batching, decode, liveness (WORKER_)", ("WORKER_",)),
    ("Retries", ("MAX_ATTEMPTS", "RETRY_")),
    ("Image URLs (IMAGE_URL_)", ("IMAGE_URL_",)),
    ("Model (CLIP_)", ("CLIP_",)),
    ("Vector store (QDRANT_)", ("QDRANT_",)),
)
OTHER = {"API": "Other API settings", "worker": "Other worker settings", "both": "Other shared settings"}


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, used by, default, meaning) for every setting, in the classes' order."""
    out = []
    for cls, who in ((QueueSettings, "both"), (ApiSettings, "API"), (WorkerSettings, "worker")):
        for name, field in cls.model_fields.items():
            if who != "both" and name in QueueSettings.model_fields:
                continue
            if field.default_factory is not None:
                default = "(computed)"
            else:
                default = "unset" if field.default is None else f"`{field.default}`"
            out.append((name.upper(), who, default, field.description or ""))
    return out


def group_of(name: str, who: str) -> str:
    for heading, keys in GROUPS:
        if any(name.startswith(k) if k.endswith("_") else name == k for k in keys):
            return heading
    return OTHER[who]


def anchor(heading: str) -> str:
    """The link anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def table() -> str:
    """Every setting, one Markdown table per group under a ``###`` heading, after a list of
    the groups."""
    grouped: dict[str, list[tuple[str, str, str, str]]] = {}
    for row in rows():
        grouped.setdefault(group_of(row[0], row[1]), []).append(row)
    order = [h for h, _ in GROUPS] + list(OTHER.values())
    headings = [h for h in order if h in grouped]
    parts = ["Groups: " + " · ".join(f"[{h}](#{anchor(h)})" for h in headings) + "."]
    for heading in headings:
        lines = [f"### {heading}", "", "| Variable | Used by | Default | Meaning |", "|---|---|---|---|"]
        lines += [f"| `{n}` | {w} | {d} | {m} |" for n, w, d, m in grouped[heading]]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _find(text: str) -> re.Match | None:
    return re.search(re.escape(START) + r"\n(.*?)\n?" + re.escape(END), text, re.S)


def block(text: str) -> str | None:
    """What lies between the markers of ``text`` (without the newlines next to them)."""
    found = _find(text)
    return found.group(1) if found else None


def write(path: Path = REFERENCE) -> bool:
    """Put ``table()`` between the markers of ``path``; True when the file changed."""
    text = path.read_text()
    found = _find(text)
    if found is None:
        raise SystemExit(f"{path}: no {START} ... {END} block to rewrite")
    new = text[:found.start()] + START + "\n" + table() + "\n" + END + text[found.end():]
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"rewrite the tables in {REFERENCE.relative_to(ROOT)}")
    a = p.parse_args(argv)
    if a.write:
        changed = write()
        print(f"{REFERENCE.relative_to(ROOT)}: {'rewritten' if changed else 'already up to date'}")
    else:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
