"""A CLIP encoder on one device: uint8 images or texts in, L2-normalised float32 vectors out.

``load_encoder`` is the only place that builds a model. It is called at worker start-up,
never at import. Images arrive as uint8 ``(N, H, W, 3)`` arrays already resized and
cropped to the model's input size (see ``batcher.decode``); they are normalised on the
device, which moves four times fewer bytes than float tensors would.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from models.acceleration import ImageForward, check_mode
from models.precision import device_type, input_dtype, prepare_model, resolve_precision
from models.preprocessing import Preprocessing

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
RANDOM_WEIGHTS = "none"


class WeightsUnavailable(RuntimeError):
    """The requested weights cannot be loaded; the message says how to fix it."""


class OutOfMemory(RuntimeError):
    """The device ran out of memory for this batch; a smaller one may fit."""


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"CLIP_DEVICE={requested} but CUDA is not available; use auto or cpu")
    return device


def _create(model_name: str, pretrained: str, seed: int, cache_dir: str | None):
    import open_clip

    if pretrained.lower() == RANDOM_WEIGHTS:
        torch.manual_seed(seed)  # every worker gets the same random weights
        return open_clip.create_model(model_name, pretrained=None)
    looks_like_path = os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
    if looks_like_path and not Path(pretrained).is_file():
        raise WeightsUnavailable(f"CLIP_PRETRAINED={pretrained}: no such checkpoint file")
    try:
        return open_clip.create_model(model_name, pretrained=pretrained, cache_dir=cache_dir,
                                      require_pretrained=True)
    except Exception as exc:  # network errors, unknown tags, corrupt files: all mean "no weights"
        raise WeightsUnavailable(
            f"cannot load CLIP weights {pretrained!r} for {model_name}: {exc.__class__.__name__}: {exc}. "
            "Fix: download them once where there is network access (they are cached in CLIP_CACHE_DIR "
            "or the Hugging Face cache), or set CLIP_PRETRAINED to a local checkpoint file, or set "
            "CLIP_PRETRAINED=none for seeded random weights (testing only: the vectors mean nothing)."
        ) from exc


class ClipEncoder:
    def __init__(self, model, tokenizer, device: torch.device, name: str, precision: str = "fp32", *,
                 pin_memory: bool = True, compile: str = "off", max_batch: int = 32) -> None:
        """``precision`` and ``compile`` as ``load_encoder`` checked them (``resolve_precision``,
        ``check_mode``): this takes them as they are."""
        import open_clip

        self.name = name
        self.weights = ""  # set by load_encoder: the checkpoint, or the seed of random weights
        self.device = device
        self.pin_memory = pin_memory and device.type == "cuda"  # CLIP_PIN_MEMORY: a no-op on a CPU
        self.precision = precision  # fp32, bf16, fp16 or int8: what the model really runs
        self.dtype = input_dtype(self.precision)  # of the pixels fed to the model
        self.model = prepare_model(model, self.precision, device)
        self.tokenizer = tokenizer
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"]
        self.preprocessing = Preprocessing(
            image_size=int(size if isinstance(size, int) else size[0]),
            mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
            interpolation=cfg.get("interpolation", "bicubic"),
        )
        self.dim = int(open_clip.get_model_config(name)["embed_dim"])
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.preprocessing.mean, device=device, dtype=self.dtype).view(shape)
        self._std = torch.tensor(self.preprocessing.std, device=device, dtype=self.dtype).view(shape)
        self.forward = ImageForward(self._encode, compile, max_batch)

    @property
    def fingerprint(self) -> str:
        """What makes this encoder's vectors: model, weights, precision. Two encoders with the same
        fingerprint make the same vector for the same image bytes; "" when the weights are unknown."""
        return f"{self.name}|{self.weights}|{self.precision}" if self.weights else ""

    def upload(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 NHWC on the host (or already on the device) -> the same on the device. From
        pinned memory without blocking when ``pin_memory`` (CUDA only), else a plain copy."""
        x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        if self.pin_memory and x.device.type == "cpu":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)  # nothing to do for a tensor already there

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC on the device -> normalised NCHW in the model's dtype."""
        x = x.permute(0, 3, 1, 2).to(self.dtype).div_(255)
        return (x - self._mean) / self._std

    def to_device(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.normalise(self.upload(images))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.normalise(x), normalize=True)

    def embed_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 ``(N, S, S, 3)`` images, a numpy array on the host or a tensor on the device."""
        with torch.inference_mode(), _oom_guard(len(images)):
            return self.forward(self.upload(images)).float().cpu().numpy()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode(), _oom_guard(len(texts)):
            tokens = self.tokenizer(texts).to(self.device)
            return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()

    def warm_up(self, batch_size: int) -> None:
        """Run one pass so that the first real batch does not pay for kernel selection; compiled
        or captured, one pass per shape to compile, so that no batch pays for it."""
        s = self.preprocessing.image_size
        for n in self.forward.warm_sizes if self.forward.mode != "off" else (max(1, batch_size),):
            self.embed_images(np.zeros((n, s, s, 3), np.uint8))
        self.embed_texts(["warm up"])


@contextmanager
def _oom_guard(n: int):
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        raise OutOfMemory(f"device out of memory for a batch of {n}") from exc


def load_encoder(model_name: str, pretrained: str, device: str = "auto", seed: int = 0,
                 cache_dir: str | None = None, precision: str = "auto", *, pin_memory: bool = True,
                 compile: str = "off", max_batch: int = 32) -> ClipEncoder:
    """Build the model on its device in ``precision`` (see ``models.precision``), its image pass
    run as ``compile`` says (see ``models.acceleration``).

    Raises ``WeightsUnavailable``, ``UnsupportedPrecision`` or ``UnsupportedAcceleration`` with
    a fix in its message.
    """
    import open_clip

    precision = resolve_precision(precision, device)  # checked once, before loading anything
    check_mode(compile, device_type(device), precision)
    open_clip.add_model_config(CONFIG_DIR)
    if model_name not in open_clip.list_models():
        raise WeightsUnavailable(f"unknown CLIP_MODEL {model_name!r}; known: clipq-tiny, ViT-B-32, ...")
    model = _create(model_name, pretrained, seed, cache_dir)
    encoder = ClipEncoder(model, open_clip.get_tokenizer(model_name), resolve_device(device), model_name,
                          precision, pin_memory=pin_memory, compile=compile, max_batch=max_batch)
    encoder.weights = f"random#{seed}" if pretrained.lower() == RANDOM_WEIGHTS else pretrained
    log.info("model %s (%s) on %s in %s, %d-d vectors, image pass %s%s", model_name, pretrained,
             encoder.device, encoder.precision, encoder.dim, compile, ", pinned copies" if encoder.pin_memory else "")
    return encoder
