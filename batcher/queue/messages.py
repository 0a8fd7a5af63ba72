"""The query lane's messages: what the API puts on ``{clipq}:requests`` and what a worker
pushes back on the request's reply key. Both sides build them here; ``lane.py`` alone puts them
on Redis and reads them back."""
from __future__ import annotations

import base64
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from batcher.queue.jobs import DEFAULT_TENANT

SEARCHES = ("text", "image", "like")
MODES = ("vector", "keyword", "hybrid")  # of a search by words; "" (an older API): "vector"


@dataclass(frozen=True)
class QueryRequest:
    kind: str  # "text", "image" or "like" (SEARCHES), "get" or "delete" (a product), "duplicates" (a page of pairs)
    text: str = ""
    mode: str = ""  # of a "text" search: one of MODES
    like: str = ""  # of a "like" search: the product whose photos it looks like
    image: bytes = b""
    limit: int = 10
    filter: dict[str, Any] = field(default_factory=dict)
    product_id: str = ""
    version: int = 0  # of a delete: the product's tombstone (lua/tombstone.lua)
    image_url: str = ""  # instead of image: the worker fetches it (batcher.fetch)
    cursor: str = ""  # of "duplicates": where the page starts (a point id; "": the first page)
    tenant: str = DEFAULT_TENANT  # whose products it reads or deletes: the store filters by it
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Redis time (ms) after which the client has given up; 0: none. Set by ask.lua on the way
    # in (it prepends the field to the JSON object), so never written by ``to_json``.
    deadline_ms: int = 0

    def to_json(self) -> str:
        body = asdict(self)
        body["image_b64"] = base64.b64encode(body.pop("image")).decode()
        if not body["deadline_ms"]:
            del body["deadline_ms"]
        return json.dumps(body)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "QueryRequest":
        """Raises ``ValueError`` for anything that is not a request (an unknown kind is one:
        the worker answers it with an error)."""
        body = json.loads(raw)
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str) or "id" not in body:
            raise ValueError("not a query request")
        body["image"] = base64.b64decode(body.pop("image_b64", None) or "")
        body["filter"] = body.get("filter") or {}
        return cls(**{k: v for k, v in body.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SearchResult:
    product_id: str | None
    score: float
    name: str | None
    description: str | None
    metadata: dict[str, Any]
    photo_index: int = 0  # the product's photo that scored best (a point without one is photo 0)


@dataclass(frozen=True)
class QueryReply:
    """``ok`` with the answer of its kind, or an error the API answers with as it stands."""

    ok: bool = True
    results: list[SearchResult] | None = None
    took_ms: float | None = None
    product: dict[str, Any] | None = None
    deleted: str | None = None
    page: dict[str, Any] | None = None  # of "duplicates": {"pairs": [...], "next_cursor"}
    status: int = 200
    code: str = ""
    message: str = ""

    @classmethod
    def error(cls, status: int, code: str, message: str) -> "QueryReply":
        return cls(ok=False, status=status, code=code, message=message)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, raw: bytes | str) -> "QueryReply":
        body = json.loads(raw)
        if body.get("results") is not None:
            # fields a newer worker added are dropped: an API may run behind its workers
            body["results"] = [SearchResult(**{k: v for k, v in r.items() if k in SearchResult.__dataclass_fields__})
                               for r in body["results"]]
        return cls(**{k: v for k, v in body.items() if k in cls.__dataclass_fields__})
