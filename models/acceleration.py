"""How the image forward pass runs (``CLIP_COMPILE``): eagerly, compiled, or replayed as CUDA graphs.

``off`` (the default) runs the model eagerly, as before these options existed. ``compile``
wraps the image path (normalisation, ``encode_image``, L2 norm) in ``torch.compile`` (inductor,
default mode; it runs on a CPU too) with the batch dimension dynamic, so that it compiles once
for every batch size above 1 and once for batch 1, at warm-up. ``cudagraphs`` captures that path
eagerly as one CUDA graph per batch shape and replays it (CUDA only). A graph has fixed shapes,
so a batch is padded with black images up to its bucket (``batch_buckets``): powers of two from
8 up to the largest batch, plus the largest batch itself; each bucket is captured once, at
warm-up. The text path stays eager: queries are rare and short.

A compiled function or a captured graph is not safe to run from two threads at once (the
query lane embeds too), so an accelerated forward pass holds a lock.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch._dynamo

COMPILE_MODES = ("off", "compile", "cudagraphs")
SMALLEST_BUCKET = 8


class UnsupportedAcceleration(ValueError):
    """This CLIP_COMPILE mode cannot run here; the message says what can."""


def check_mode(mode: str, device_type: str, precision: str) -> None:
    """Raise ``UnsupportedAcceleration`` for a mode this device or precision cannot run."""
    if mode not in COMPILE_MODES:
        raise UnsupportedAcceleration(f"CLIP_COMPILE={mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if mode == "cudagraphs" and device_type != "cuda":
        raise UnsupportedAcceleration("CLIP_COMPILE=cudagraphs needs a CUDA device: use off or compile on a CPU")
    if mode != "off" and precision == "int8":
        raise UnsupportedAcceleration(f"CLIP_COMPILE={mode} does not apply to CLIP_PRECISION=int8 "
                                      "(dynamically quantised layers): use off")


def batch_buckets(max_batch: int, smallest: int = SMALLEST_BUCKET) -> tuple[int, ...]:
    """The batch shapes an accelerated forward pass runs at: powers of two from ``smallest``
    below ``max_batch``, then ``max_batch``."""
    sizes, size = [], smallest
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return tuple(sizes) + (max_batch,)


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``n`` images (``n`` itself when none does)."""
    return next((b for b in buckets if b >= n), n)


class ImageForward:
    """uint8 NHWC images on the device -> L2-normalised features, in the chosen mode."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], mode: str, max_batch: int) -> None:
        self.mode = mode
        self.buckets = batch_buckets(max_batch) if mode == "cudagraphs" else ()
        # the batch sizes a warm-up runs: every shape that would otherwise compile during traffic
        self.warm_sizes = self.buckets or ((max(2, max_batch), 1) if mode == "compile" else (max_batch,))
        self._lock = threading.Lock()
        if mode == "compile":
            self._run = torch.compile(fn)
        elif mode == "cudagraphs":
            self._run = _Graphs(fn)
        else:
            self._run = fn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.mode == "off":
            return self._run(x)
        if self.mode == "compile":
            if n > 1:
                torch._dynamo.mark_dynamic(x, 0)  # one graph for every batch size (1 is specialised)
            with self._lock:
                return self._run(x)
        size = bucket_for(n, self.buckets)
        if size > n:
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        with self._lock:
            return self._run(x)[:n].clone()  # a graph's output buffer is overwritten by its next replay


class _Graphs:
    """One CUDA graph per input shape, captured on first use (warm-up) and replayed after."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: torch.Tensor):
        static_in = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up passes off the capture, as CUDA graphs require
            for _ in range(2):
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return graph, static_in, static_out

