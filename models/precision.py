"""Numeric precision of the encoder (``CLIP_PRECISION``): which a device can run, and the model for it.

``auto`` is fp16 on CUDA and fp32 on a CPU. ``int8`` is CPU only: dynamic quantisation of
every Linear layer with torch's own ``quantize_dynamic`` (int8 weights, activations quantised
per batch), after the attention blocks' fused projections are turned into plain Linear layers
so that they are quantised too. ``bf16`` and ``fp16`` on a CPU need instructions for them
(AVX512-BF16/AMX, AVX512-FP16/AMX-FP16); without them torch emulates them far slower than fp32,
so they are refused. An impossible choice raises ``UnsupportedPrecision`` at start-up.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
_FLOAT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class UnsupportedPrecision(ValueError):
    """This precision cannot run on this device; the message says what can."""


def device_type(requested: str) -> str:
    """``cuda`` or ``cpu`` for a CLIP_DEVICE value, without checking that CUDA is there."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested).type


def cpu_half_support() -> frozenset[str]:
    """The half precisions this CPU runs natively (through oneDNN): a subset of {bf16, fp16}."""
    checks = {"bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported, "fp16": torch.ops.mkldnn._is_mkldnn_fp16_supported}
    return frozenset(name for name, check in checks.items() if check())


def resolve_precision(requested: str, device: str, cpu_supports: frozenset[str] | None = None) -> str:
    """The precision to run (``auto`` resolved) or ``UnsupportedPrecision`` saying why not."""
    if requested not in PRECISIONS:
        raise UnsupportedPrecision(f"CLIP_PRECISION={requested!r}: use one of {', '.join(PRECISIONS)}")
    kind = device_type(device)
    if requested == "auto":
        return "fp16" if kind == "cuda" else "fp32"
    if requested == "int8" and kind != "cpu":
        raise UnsupportedPrecision(f"CLIP_PRECISION=int8 runs on the CPU only (dynamic quantisation), not on "
                                   f"{kind}: set CLIP_DEVICE=cpu, or use fp16 (auto) or bf16 on CUDA")
    if requested in ("bf16", "fp16") and kind == "cpu":
        supported = cpu_half_support() if cpu_supports is None else cpu_supports
        if requested not in supported:
            raise UnsupportedPrecision(
                f"CLIP_PRECISION={requested} needs a CPU with native {requested} instructions "
                f"({'AVX512-BF16 or AMX' if requested == 'bf16' else 'AVX512-FP16 or AMX-FP16'}) and this "
                f"one has none (torch sees {torch.backends.cpu.get_cpu_capability()}): use fp32 or int8")
    if requested == "bf16" and kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise UnsupportedPrecision("CLIP_PRECISION=bf16: this GPU has no bf16; use fp16 (auto)")
    return requested


def input_dtype(precision: str) -> torch.dtype:
    """The dtype of the tensors fed to the model (an int8 model takes float32 and quantises inside)."""
    return _FLOAT.get(precision, torch.float32)


def prepare_model(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``model`` on ``device`` in ``precision`` (already resolved), in eval mode."""
    model = model.to(device=device, dtype=input_dtype(precision)).eval()
    if precision != "int8":
        return model
    split_attention(model)
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    for layer in model.modules():  # open_clip asks a block's c_fc for the dtype to cast its input to
        if isinstance(layer, QuantizedLinear):
            layer.int8_original_dtype = torch.float32
    return model


class LinearAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention, as CLIP uses it) with its projections as nn.Linear.

    The same weights and the same result; only the fused ``in_proj_weight``, which
    ``quantize_dynamic`` cannot see, becomes a Linear layer that it can quantise.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        d = mha.embed_dim
        self.heads, self.batch_first = mha.num_heads, mha.batch_first
        self.in_proj = nn.Linear(d, 3 * d, bias=mha.in_proj_bias is not None)
        self.in_proj.weight = mha.in_proj_weight
        if mha.in_proj_bias is not None:
            self.in_proj.bias = mha.in_proj_bias
        self.out_proj = nn.Linear(d, d, bias=mha.out_proj.bias is not None)
        self.out_proj.weight, self.out_proj.bias = mha.out_proj.weight, mha.out_proj.bias

    def forward(self, q, k=None, v=None, need_weights: bool = False, attn_mask=None):
        x = q if self.batch_first else q.transpose(0, 1)
        n, length, d = x.shape
        qkv = self.in_proj(x).view(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(n, length, d))
        return (out if self.batch_first else out.transpose(0, 1)), None


def split_attention(module: nn.Module) -> None:
    """Replace, in place, every self-attention `nn.MultiheadAttention` under `module` by `LinearAttention`."""
    for name, child in module.named_children():
        self_attention = not hasattr(module, "ln_1_kv")  # open_clip's cross-attention blocks have one
        if isinstance(child, nn.MultiheadAttention) and self_attention and child._qkv_same_embed_dim \
                and child.bias_k is None:
            setattr(module, name, LinearAttention(child))
        else:
            split_attention(child)
