"""What every peer server runs: clipq's decoder and encoder, nothing of its own.

The same ``batcher.decode.decode`` (JPEG draft mode, resize and centre crop as open_clip) and the
same ``ClipEncoder.embed_images`` as the worker, so that the comparison is of the serving
around the model, not of the model or the decoder.
"""
from __future__ import annotations

import argparse

import numpy as np

MAX_PIXELS = 40_000_000  # the worker's default MAX_IMAGE_PIXELS


def server_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--window-ms", type=float, default=50)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--decode-threads", type=int, default=2)
    p.add_argument("--max-in-flight", type=int, default=64, help="requests a server may hold at once")
    return p.parse_args()


class PeerModel:
    """The encoder (seeded random weights, as the worker's CLIP_PRETRAINED=none) and its decoder."""

    def __init__(self, model: str, device: str, threads: int | None, batch_size: int) -> None:
        import torch

        from models.clip import load_encoder

        if threads:
            torch.set_num_threads(threads)
        self.encoder = load_encoder(model, "none", device, seed=0)
        self.encoder.warm_up(batch_size)

    def decode(self, data: bytes) -> np.ndarray:
        from batcher.decode import decode

        return decode(data, self.encoder.preprocessing, MAX_PIXELS)

    def embed(self, pixels: list[np.ndarray]) -> list[list[float]]:
        return self.encoder.embed_images(np.stack(pixels)).tolist()
