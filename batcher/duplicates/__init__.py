"""Near-duplicate photos: the perceptual hash, its banded index, the lookup at ingest, the pairs."""
