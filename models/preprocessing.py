"""What an image must look like before the model, as plain numbers: no torch here, so the
decode stage (and anything else that prepares pixels) can use it without loading torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preprocessing:
    """Taken from the model (``ClipEncoder.preprocessing``), never typed in."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bicubic" or "bilinear"
