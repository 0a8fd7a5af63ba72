"""``clipq-import``'s files: the resume state and the failures list."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.client.catalog import Problem


class StateFile:
    """JSON Lines, appended as rows finish: ``{"key", "status", "job_id", "product_id"}``.

    The last line of a key wins. A key covers the row's fields and its image's bytes, so a
    changed row is sent again. A line cut short by a crash is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, tuple[str, str | None]]:
        done: dict[str, tuple[str, str | None]] = {}
        if not self.path.is_file():
            return done
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                done[entry["key"]] = (entry["status"], entry.get("job_id"))
            except (ValueError, KeyError, TypeError):
                continue
        return done

    def record(self, key: str, status: str, job_id: str | None, product_id: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "status": status, "job_id": job_id, "product_id": product_id}) + "\n")


def write_failures(path: Path, failed: "list[Problem]") -> None:
    rows = [{"line": p.line, "product_id": p.product_id, "reason": p.reason} for p in failed]
    with open(path, "w", newline="", encoding="utf-8") as f:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            f.writelines(json.dumps(row) + "\n" for row in rows)
            return
        writer = csv.DictWriter(f, fieldnames=["line", "product_id", "reason"])
        writer.writeheader()
        writer.writerows(rows)
