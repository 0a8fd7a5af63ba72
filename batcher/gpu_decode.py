"""GPU decode (``WORKER_DECODE_DEVICE=cuda``): a batch's JPEGs decoded with nvJPEG, resized and
centre-cropped on the device, handed to the model without a trip back to the host.

Only plain JPEGs go this way: RGB or greyscale, upright (no EXIF rotation: nvJPEG does not apply
it), complete (ending in the EOI marker: nvJPEG may fill a truncated file with grey where Pillow
refuses it), within the pixel limit. Everything else, and every JPEG of a chunk that nvJPEG
fails on, takes the CPU path (``ImageDecoder``), so a bad image still fails only itself, with the
same message as on the CPU. The decodes run in chunks of at most ``memory`` bytes of full-size
pixels, which bounds the device memory they take.

The class works on any torch device (on a CPU ``decode_jpeg`` uses libjpeg-turbo), which is how
the tests exercise it without a GPU.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import torch
from torch.nn import functional as F

from batcher.config import DecodeConfig
from batcher.decode import DecodeBudget, ImageDecoder
from batcher.queue.images import probe
from models.preprocessing import Preprocessing

log = logging.getLogger("clipq.decode")
_ORIENTATION = 0x0112


class UnsupportedDecodeDevice(ValueError):
    """WORKER_DECODE_DEVICE names a device this machine lacks; the message says what to use."""


def check_decode_device(device: str) -> None:
    if device != "cpu" and not torch.cuda.is_available():
        raise UnsupportedDecodeDevice(f"WORKER_DECODE_DEVICE={device} decodes JPEGs on a CUDA GPU, and torch sees "
                                      "none here: set WORKER_DECODE_DEVICE=cpu (Pillow in the decode threads)")


def make_decoder(d: DecodeConfig, prep: Preprocessing, budget: DecodeBudget) -> ImageDecoder | JpegBatchDecoder:
    """The decoder ``WORKER_DECODE_DEVICE`` asks for."""
    cpu = ImageDecoder(prep, d.max_pixels, budget, d.threads)
    return cpu if d.device == "cpu" else JpegBatchDecoder(cpu, d.device, d.memory)


class JpegBatchDecoder:
    def __init__(self, cpu: ImageDecoder, device: str, memory: int) -> None:
        from torchvision.io import ImageReadMode, decode_jpeg

        self.cpu, self.device, self.memory = cpu, torch.device(device), memory
        self._decode_jpeg, self._rgb = decode_jpeg, ImageReadMode.RGB
        # a stream of its own: decoding batch k+1 overlaps the model's pass on batch k
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def close(self) -> None:
        self.cpu.close()

    def hashed(self, images: list[bytes | None]) -> tuple[torch.Tensor | None, list[str | None], list[int | None]]:
        """The pixels and errors of ``__call__``, and the perceptual hash of each decoded image
        (from the CPU: a JPEG at its smallest DCT scale)."""
        pixels, errors = self(images)
        hashes = self.cpu.hash_only([None if e else data for data, e in zip(images, errors)])
        return pixels, errors, hashes

    def hash_only(self, images: list[bytes | None]) -> list[int | None]:
        return self.cpu.hash_only(images)

    def __call__(self, images: list[bytes | None]) -> tuple[torch.Tensor | None, list[str | None]]:
        if self.stream is None:
            return self._decode(images)
        with torch.cuda.stream(self.stream):
            result = self._decode(images)
        self.stream.synchronize()  # the pixels are complete before the batch is handed on
        return result

    def _decode(self, images: list[bytes | None]) -> tuple[torch.Tensor | None, list[str | None]]:
        sizes = [self._plain_jpeg(data) for data in images]
        out: dict[int, torch.Tensor] = {}
        for chunk in self._chunks(sizes):
            out.update(self._decode_chunk(chunk, images))
        rest = [i for i in range(len(images)) if i not in out]
        errors: list[str | None] = [None] * len(images)
        if rest:
            pixels, rest_errors = self.cpu([images[i] for i in rest])
            good = iter(torch.from_numpy(pixels).to(self.device) if pixels is not None else [])
            for i, error in zip(rest, rest_errors):
                if error is None:
                    out[i] = next(good)
                errors[i] = error
        ordered = [out[i] for i in range(len(images)) if i in out]
        return (torch.stack(ordered) if ordered else None), errors

    def _plain_jpeg(self, data: bytes | None) -> int | None:
        """Full-size pixel bytes of a JPEG this path can take, else None (the CPU decodes it)."""
        if not data or data[:3] != b"\xff\xd8\xff" or data.rstrip(b"\0")[-2:] != b"\xff\xd9":
            return None
        try:
            im = probe(data, self.cpu.max_pixels)
            if im.format != "JPEG" or im.mode not in ("RGB", "L") or im.getexif().get(_ORIENTATION, 1) != 1:
                return None
            return im.width * im.height * 3
        except Exception:  # anything odd in the header: the CPU path says what is wrong
            return None

    def _chunks(self, sizes: list[int | None]) -> Iterator[list[int]]:
        chunk, held = [], 0
        for i, size in enumerate(sizes):
            if size is None or size > self.memory:
                continue
            if chunk and held + size > self.memory:
                yield chunk
                chunk, held = [], 0
            chunk.append(i)
            held += size
        if chunk:
            yield chunk

    def _decode_chunk(self, chunk: list[int], images: list[bytes | None]) -> dict[int, torch.Tensor]:
        data = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in chunk]
        try:
            with warnings.catch_warnings():  # torchvision 0.29 announces the move to TorchCodec
                warnings.simplefilter("ignore")
                decoded = self._decode_jpeg(data, mode=self._rgb, device=self.device)
            return {i: fit_tensor(x, self.cpu.prep) for i, x in zip(chunk, decoded)}
        except Exception as exc:  # one bad file fails the whole call: the CPU decodes them one by one
            log.info("JPEG batch decode on %s of %d images failed (%s: %s): decoding them with Pillow",
                     self.device, len(chunk), exc.__class__.__name__, exc)
            return {}


def fit_tensor(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 CHW -> uint8 HWC of the model's size: shorter side resized, centre-cropped (as
    ``batcher.decode.fit`` and open_clip do), on the tensor's device."""
    size = prep.image_size
    h, w = x.shape[-2:]
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    mode = "bicubic" if prep.interpolation == "bicubic" else "bilinear"
    resized = F.interpolate(x[None].float(), size=(new_h, new_w), mode=mode, antialias=True, align_corners=False)
    crop = resized[0, :, top:top + size, left:left + size]
    return crop.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
