#!/usr/bin/env python3
"""Compare ways to run the CLIP image tower in int8 on a CPU, side by side: speed and parity.

Model only (no decode, no worker), on the corpus's ``index`` photos decoded as the worker does,
at ``--batch-size``; every method runs two batches per round, the methods alternate, and each
figure is the median over ``--rounds``. Parity is against torch fp32 on the same pixels: the
smallest cosine, and the share of images whose nearest other image is the fp32 one (ties
within 0.001 count as the same answer: the corpus holds a few copies of one picture).

Methods: torch fp32; torch.ao ``quantize_dynamic`` of nn.Linear as is (attention's fused
projection stays fp32) and with the attention projections split into nn.Linear first (what
``CLIP_PRECISION=int8`` does, ``models.precision``); and, where installed
(``pip install onnx onnxruntime openvino nncf``), ONNX Runtime fp32 and dynamic int8 (of every
MatMul and Conv; and of the MatMuls with a weight only, per channel, 7-bit weights), and
OpenVINO fp32 and NNCF post-training int8 calibrated on the same photos.

    .venv/bin/python -m scripts.compare_int8 --model ViT-B-32 --batch-size 32 --rounds 3
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from torch import nn

from scripts.lib.photos import corpus_files

warnings.filterwarnings("ignore")


def torch_methods(visual: nn.Module) -> dict:
    from torch.ao.quantization import quantize_dynamic

    from models.precision import split_attention

    split = copy.deepcopy(visual)
    split_attention(split)
    models = {"torch fp32": visual,
              "torch.ao dynamic int8, nn.Linear as is": quantize_dynamic(copy.deepcopy(visual), {nn.Linear},
                                                                          dtype=torch.qint8),
              "torch.ao dynamic int8, attention split into nn.Linear (chosen)": quantize_dynamic(
                  split, {nn.Linear}, dtype=torch.qint8)}
    return {name: (lambda x, m=m: m(torch.from_numpy(x)).numpy()) for name, m in models.items()}


def onnx_methods(visual: nn.Module, sample: np.ndarray, tmp: str, calibration: np.ndarray) -> dict:
    methods = {}
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        print("onnxruntime not installed: its rows are skipped")
        return methods
    f32, f8 = os.path.join(tmp, "visual.onnx"), os.path.join(tmp, "visual-int8.onnx")
    with torch.enable_grad():  # without grad, attention takes a fused path that ONNX cannot export
        torch.onnx.export(visual, torch.from_numpy(sample), f32, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    quantize_dynamic(f32, f8, weight_type=QuantType.QInt8)
    # as torch's dynamic int8 of nn.Linear does: MatMuls with a weight only (not attention's
    # activation-by-activation ones, not the patch-embedding Conv), one scale per output channel,
    # 7-bit weights (reduce_range, as fbgemm: without VNNI, AVX2's u8*s8 products saturate)
    f8w = os.path.join(tmp, "visual-int8-weights.onnx")
    quantize_dynamic(f32, f8w, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    for name, path in (("onnxruntime fp32", f32), ("onnxruntime dynamic int8", f8),
                       ("onnxruntime dynamic int8, weight MatMuls only, per channel, 7-bit", f8w)):
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        methods[name] = lambda x, s=session: s.run(None, {"x": x})[0]
    try:
        import nncf
        import openvino as ov
    except ImportError:
        print("openvino or nncf not installed: their rows are skipped")
        return methods
    core, model = ov.Core(), ov.convert_model(f32)
    fp32 = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    data = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    int8 = core.compile_model(nncf.quantize(model, data, subset_size=len(calibration),
                                            model_type=nncf.ModelType.TRANSFORMER), "CPU")
    methods["openvino fp32"] = lambda x, c=fp32: c(x)[0]
    methods["openvino + nncf static int8"] = lambda x, c=int8: c(x)[0]
    return methods


def parity(reference: np.ndarray, vectors: np.ndarray) -> tuple[float, float]:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    truth, found = reference @ reference.T, v @ v.T
    np.fill_diagonal(truth, -np.inf)
    np.fill_diagonal(found, -np.inf)
    picked = truth[np.arange(len(v)), found.argmax(1)]
    return float((v * reference).sum(1).min()), float(np.mean(picked >= truth.max(1) - 1e-3))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_grad_enabled(False)
    from batcher.decode import decode
    from models.clip import load_encoder

    encoder = load_encoder(a.model, "none", "cpu", seed=0)
    photos = np.stack([decode(f.read_bytes(), encoder.preprocessing, 40_000_000) for f in corpus_files("index")])
    pixels = encoder.to_device(photos).numpy()
    batch = np.concatenate([pixels] * (a.batch_size // len(pixels) + 1))[:a.batch_size]
    reference = encoder.embed_images(photos)
    with tempfile.TemporaryDirectory() as tmp:
        methods = torch_methods(encoder.model.visual) | onnx_methods(encoder.model.visual, pixels[:2], tmp, pixels)
        checks = {name: parity(reference, np.asarray(fn(pixels), np.float32)) for name, fn in methods.items()}
        rates: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(a.rounds):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fn(batch), fn(batch)
                rates[name].append(2 * a.batch_size / (time.perf_counter() - t0))
    base = statistics.median(rates["torch fp32"])
    print(f"\n{a.model}, batch {a.batch_size}, {len(photos)} corpus photos, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), medians of {a.rounds} alternating rounds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| method | images/s | / torch fp32 | min cosine to fp32 | top-1 agreement |\n|---|---:|---:|---:|---:|")
    for name in methods:
        rate = statistics.median(rates[name])
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x | {checks[name][0]:.4f} | {checks[name][1]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
