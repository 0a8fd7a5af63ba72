"""The optional confirmation of near duplicates by CLIP (``WORKER_DUPLICATE_MIN_COSINE`` > 0):
a pair found by its hashes stays only where the two photos' CLIP vectors lie at least that close
(cosine). One read by point id for the other photos' vectors; a photo of the same batch brings
its own. A photo whose vector is unknown is not confirmed. With real weights this drops two
different pictures that happen to hash alike (a plain backdrop, a logo); with random weights
(``CLIP_PRETRAINED=none``) it means nothing, hence off by default."""
from __future__ import annotations

import numpy as np

from batcher.duplicates.photo import NearDuplicate, Photo
from batcher.store import VectorStore
from batcher.store.points import point_id


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return -1.0
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def confirmed(store: VectorStore, photos: list[Photo], near: list[list[NearDuplicate]], min_cosine: float
              ) -> list[list[NearDuplicate]]:
    """Of each photo's near duplicates (its tenant's), those whose vector is within ``min_cosine``
    of its own."""
    wanted = sorted({point_id(n.product_id, n.photo_index, p.tenant) for p, found in zip(photos, near) for n in found})
    vectors = store.vectors(wanted) if wanted else {}
    vectors |= {point_id(p.product_id, p.photo_index, p.tenant): p.vector for p in photos if p.vector is not None}
    return [[n for n in found
             if cosine(p.vector, vectors.get(point_id(n.product_id, n.photo_index, p.tenant))) >= min_cosine]
            for p, found in zip(photos, near)]
