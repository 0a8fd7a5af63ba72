#!/usr/bin/env python3
"""Print the README's settings table from the settings classes (the single source of truth)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.settings import ApiSettings  # noqa: E402
from batcher.queue.config import QueueSettings  # noqa: E402
from batcher.settings import WorkerSettings  # noqa: E402


def rows() -> list[tuple[str, str, str, str]]:
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


def table() -> str:
    lines = ["| Variable | Used by | Default | Meaning |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {w} | {d} | {m} |" for n, w, d, m in rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
