"""What the query lane asks the store for each search (``batcher.store.asks.Ask``).

Words, by their ``mode``: ``vector`` embeds them with CLIP, ``keyword`` gives them to BM25 as
they are (no model pass), ``hybrid`` does both and the store fuses the two lists. A photo is
embedded with CLIP. A "more like this" search reads the stored vectors of the product's photos
and leaves that product out. All texts that need CLIP go through one forward pass, all photos
through another.
"""
from __future__ import annotations

import numpy as np

from batcher.decode import DecodeBudget, DecodeError, decode
from batcher.queue.messages import MODES, QueryReply, QueryRequest
from batcher.store.asks import Ask

Planned = tuple[dict[str, Ask], dict[str, QueryReply]]  # by request id: what to ask, or the answer already


def by_words(encoder, requests: list[QueryRequest]) -> Planned:
    asks, replies = {}, {}
    modes = {r.id: r.mode or "vector" for r in requests}
    for r in requests:
        if modes[r.id] not in MODES:
            replies[r.id] = QueryReply.error(422, "invalid_mode", f"mode must be one of {', '.join(MODES)}")
        elif modes[r.id] == "keyword":
            asks[r.id] = Ask(int(r.limit), r.filter, words=r.text, tenant=r.tenant)
    clip = [r for r in requests if modes[r.id] in ("vector", "hybrid")]
    if clip:
        for r, v in zip(clip, encoder.embed_texts([r.text for r in clip]).astype(np.float32).tolist()):
            asks[r.id] = Ask(int(r.limit), r.filter, v, r.text if modes[r.id] == "hybrid" else "", tenant=r.tenant)
    return asks, replies


def by_photo(encoder, requests: list[QueryRequest], max_pixels: int, budget: DecodeBudget | None) -> Planned:
    replies, decoded, pixels = {}, [], []
    for r in requests:
        try:
            pixels.append(decode(r.image, encoder.preprocessing, max_pixels, budget))
            decoded.append(r)
        except DecodeError as exc:
            replies[r.id] = QueryReply.error(422, "invalid_image", str(exc))
    if not decoded:
        return {}, replies
    vectors = encoder.embed_images(np.stack(pixels)).astype(np.float32).tolist()
    return {r.id: Ask(int(r.limit), r.filter, v, tenant=r.tenant) for r, v in zip(decoded, vectors)}, replies


def like(store, requests: list[QueryRequest]) -> Planned:
    asks, replies = {}, {}
    for r in requests:
        photos = store.photos(r.like, r.tenant)
        if photos:
            asks[r.id] = Ask(int(r.limit), r.filter, like=tuple(photos), exclude=r.like, tenant=r.tenant)
        else:
            replies[r.id] = QueryReply.error(404, "product_not_found", f"no product {r.like!r} in the index")
    return asks, replies
