"""``CLIP_INT8_BACKEND=onnxruntime``: the image tower in int8 through ONNX Runtime.

At start-up the float32 image tower is exported to ONNX (in memory, nothing on disk), then
quantised the way ``models.precision`` quantises it in torch: only the MatMuls with a weight
(not attention's activation-by-activation products, not the patch-embedding convolution), int8
weights with one scale per output channel, 7-bit (``reduce_range``: on a CPU without VNNI,
AVX2's u8*s8 products saturate), activations quantised per batch. ONNX Runtime's default
(per tensor, 8-bit) fails the 0.99 cosine bound (0.982 on ViT-B-32); this passes it (0.9997).
The export and quantisation take about 20 s for ViT-B-32 on 2 cores.

Texts stay in torch (``models.precision``): queries are rare and short. The session runs on
``torch.get_num_threads()`` threads, which do not spin while they wait, so that the worker's
decode threads get the CPU between the session's parallel regions.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
import time
import warnings

import numpy as np
import torch
from torch import nn

from models.precision import UnsupportedPrecision

log = logging.getLogger(__name__)
INT8_BACKENDS = ("torch", "onnxruntime")
INSTALL_HINT = "pip install 'clipq[int8]' (onnx and onnxruntime)"


def check_backend(backend: str, precision: str) -> None:
    """Raise ``UnsupportedPrecision`` for an unknown backend, or onnxruntime without its packages.
    The backend only matters for ``int8``; any other precision ignores it."""
    if backend not in INT8_BACKENDS:
        raise UnsupportedPrecision(f"CLIP_INT8_BACKEND={backend!r}: use one of {', '.join(INT8_BACKENDS)}")
    if backend == "onnxruntime" and precision == "int8":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise UnsupportedPrecision(f"CLIP_INT8_BACKEND=onnxruntime needs {exc.name}: {INSTALL_HINT}, "
                                       "or set CLIP_INT8_BACKEND=torch") from None


class OnnxImageTower:
    """Normalised float32 NCHW pixels -> the image tower's (unnormalised) embeddings, in int8."""

    def __init__(self, visual: nn.Module, image_size: int, threads: int) -> None:
        import onnxruntime as ort

        t0 = time.perf_counter()
        quantised = _quantise(_export(visual, image_size))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no notes about unused initialisers
        self.session = ort.InferenceSession(quantised, options, providers=["CPUExecutionProvider"])
        log.info("image tower exported to ONNX and quantised to int8 in %.1fs", time.perf_counter() - t0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"pixels": pixels})[0])


def _export(visual: nn.Module, image_size: int) -> bytes:
    """The float32 tower as an ONNX model (bytes), the batch size left free."""
    sample = torch.zeros(2, 3, image_size, image_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.enable_grad():  # no grad: attention takes a fused path ONNX lacks
        warnings.simplefilter("ignore")
        torch.onnx.export(visual.float().eval(), sample, buffer, input_names=["pixels"], output_names=["embedding"],
                          dynamic_axes={"pixels": {0: "n"}, "embedding": {0: "n"}}, opset_version=17, dynamo=False)
    return buffer.getvalue()


def _quantise(model: bytes) -> bytes:
    """ONNX Runtime's dynamic quantisation, as torch's: weight MatMuls, per channel, 7-bit weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="clipq-onnx-") as tmp:  # the quantiser reads and writes files
        source, target = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(source, "wb") as f:
            f.write(model)
        root = logging.getLogger()  # the quantiser chats there, node by node, and advises pre-processing
        root.addFilter(_errors_only)
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                             op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
        finally:
            root.removeFilter(_errors_only)
        with open(target, "rb") as f:
            return f.read()


def _errors_only(record: logging.LogRecord) -> bool:
    """A filter on the root logger: only what is logged there directly passes through it."""
    return record.levelno >= logging.ERROR
