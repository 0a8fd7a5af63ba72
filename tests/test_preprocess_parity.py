"""The worker's fast preprocessing gives the embeddings open_clip's own ``preprocess`` gives.

The fast path (``batcher.decode.decode``: JPEG ``Image.draft``, Pillow resize and centre
crop to uint8, normalised on the device by ``ClipEncoder.embed_images``) must be a faithful
stand-in for open_clip's transform (torchvision Resize + CenterCrop + ToTensor + Normalize,
fed straight to the model's ``encode_image``) applied to the same upright RGB image. For every
``index`` image of the shared corpus we require cosine similarity >= 0.99 between the two
embeddings, on the tiny test model and on the real ViT-B-32 architecture (seeded random
weights: no download). Random weights, the tiny model's especially, are forgiving of
geometric mistakes (a mirrored image still scores > 0.99 on it), so the pixels themselves
are compared too: a flip or a 90 degree turn is several times over that tolerance.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from batcher.decode import decode, open_rgb
from conftest import CORPUS, corpus_files

MAX_PIXELS = 40_000_000
MIN_COSINE = 0.99
MAX_MEAN_PIXEL_DIFF = 0.05  # mean |fast - open_clip| on the 0..1 scale (a mirror image: 0.08-0.34)


def open_clip_preprocess(encoder):
    """open_clip's own inference transform, built from the model's preprocess config."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(encoder.model)
    return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                     interpolation=cfg.get("interpolation"),
                                     resize_mode=cfg.get("resize_mode"), fill_color=cfg.get("fill_color", 0))


def both_paths(encoder, files):
    """(fast uint8 NHWC, open_clip float NCHW) for the same files."""
    preprocess = open_clip_preprocess(encoder)
    fast, ref = [], []
    for path in files:
        data = path.read_bytes()
        fast.append(decode(data, encoder.preprocessing, MAX_PIXELS))
        ref.append(preprocess(open_rgb(data, MAX_PIXELS)))  # no min_side: no draft, full decode
    return np.stack(fast), torch.stack(ref)


def open_clip_embed(encoder, pixels: torch.Tensor) -> np.ndarray:
    """The reference embedding: open_clip's float NCHW input straight into the model."""
    with torch.inference_mode():
        x = pixels.to(encoder.device, encoder.dtype)
        return encoder.model.encode_image(x, normalize=True).float().cpu().numpy()


def unnormalise(encoder, pixels: torch.Tensor) -> torch.Tensor:
    prep = encoder.preprocessing
    return pixels * torch.tensor(prep.std).view(1, 3, 1, 1) + torch.tensor(prep.mean).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def vit_b32():
    from models.clip import load_encoder

    return load_encoder("ViT-B-32", "none", "cpu", seed=0)


@pytest.fixture(scope="module")
def index_files():
    files = corpus_files("index")
    assert files, f"no index rows in {CORPUS / 'manifest.tsv'}"
    return files


def check_parity(encoder, files, expected_size):
    assert encoder.preprocessing.image_size == expected_size
    fast, ref = both_paths(encoder, files)
    assert fast.shape == (len(files), expected_size, expected_size, 3) and fast.dtype == np.uint8
    assert tuple(ref.shape) == (len(files), 3, expected_size, expected_size)

    pixels = torch.from_numpy(fast.copy()).permute(0, 3, 1, 2).float() / 255
    diff = (pixels - unnormalise(encoder, ref)).abs().mean(dim=(1, 2, 3))
    mirrored = (pixels.flip(3) - pixels).abs().mean(dim=(1, 2, 3))

    cosine = (encoder.embed_images(fast) * open_clip_embed(encoder, ref)).sum(axis=1)
    report = "\n".join(f"{p.name}: cosine {c:.5f}, mean pixel diff {d:.4f} (a mirror image: {m:.4f})"
                       for p, c, d, m in zip(files, cosine, diff.tolist(), mirrored.tolist()))
    bad = [p.name for p, c, d in zip(files, cosine, diff.tolist()) if c < MIN_COSINE or d > MAX_MEAN_PIXEL_DIFF]
    assert not bad, f"fast preprocessing differs from open_clip's for {bad}:\n{report}"


def test_parity_tiny_model(encoder, index_files):
    check_parity(encoder, index_files, 64)


@pytest.mark.slow
def test_parity_vit_b32(vit_b32, index_files):
    """The one test on the real ViT-B-32 architecture (224 px, random weights, CPU fp32)."""
    assert vit_b32.dim == 512 and vit_b32.preprocessing.interpolation == "bicubic"
    check_parity(vit_b32, index_files, 224)


def product_photo(long_side: int = 1000) -> bytes:
    with Image.open(CORPUS / "real" / "coffee.png") as im:
        im = im.convert("RGB")
        w, h = im.size
        im = im.resize((long_side, round(h * long_side / w)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_jpeg_is_decoded_at_reduced_scale():
    """``Image.draft`` really shrinks a big JPEG while decoding, never below the model size."""
    data = product_photo()
    full = open_rgb(data, MAX_PIXELS)
    assert full.size == (1000, 667)
    small = open_rgb(data, MAX_PIXELS, min_side=224)
    assert small.size[0] < full.size[0] and small.size[1] < full.size[1]
    assert min(small.size) >= 224
    assert small.size == (500, 334)  # a 1/2 DCT scale: 1/4 would leave 167 px < 224
    assert open_rgb(data, MAX_PIXELS, min_side=64).size == (125, 84)  # 1/8 for the tiny model


def test_draft_applies_before_the_exif_turn():
    """A portrait stored sideways (EXIF orientation 6) is drafted and turned upright."""
    data = product_photo()
    with Image.open(io.BytesIO(data)) as im:
        exif = im.getexif()
        exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
        out = io.BytesIO()
        im.save(out, "JPEG", quality=90, exif=exif.tobytes())
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(out.getvalue())))
    assert upright.size == (667, 1000)
    small = open_rgb(out.getvalue(), MAX_PIXELS, min_side=224)
    assert small.size == (334, 500)
