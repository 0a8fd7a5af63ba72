"""``python -m batcher``: run one worker. Flags override the environment."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import get_args

from batcher.settings import CompileMode, DecodeDevice, Precision

log = logging.getLogger("clipq.worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m batcher", description=__doc__)
    p.add_argument("--worker-id", help="unique worker name (env WORKER_ID)")
    p.add_argument("--batch-mode", action="store_true",
                   help="process what is queued (and its retries), then exit")
    p.add_argument("--max-jobs", type=int, help="exit after claiming this many jobs")
    p.add_argument("--max-batch-size", type=int, help="largest micro-batch (env WORKER_BATCH_SIZE)")
    p.add_argument("--max-wait-ms", type=float, help="batch window after the first job (env WORKER_MAX_WAIT_MS)")
    p.add_argument("--metrics-port", type=int, help="port of /metrics, 0 for none (env WORKER_METRICS_PORT)")
    p.add_argument("--precision", choices=get_args(Precision),
                   help="model precision; int8 on CPU only (env CLIP_PRECISION)")
    p.add_argument("--compile", choices=get_args(CompileMode),
                   help="image forward pass: eager, torch.compile, or CUDA graphs (env CLIP_COMPILE)")
    p.add_argument("--decode-device", choices=get_args(DecodeDevice),
                   help="decode JPEGs with Pillow threads or nvJPEG on the GPU (env WORKER_DECODE_DEVICE)")
    p.add_argument("--pin-memory", action=argparse.BooleanOptionalAction,
                   help="copy batches to the GPU from pinned memory (env CLIP_PIN_MEMORY)")
    return p.parse_args(argv)


def build_settings(args: argparse.Namespace):
    from batcher.settings import WorkerSettings

    return WorkerSettings.from_env(worker_id=args.worker_id, worker_batch_size=args.max_batch_size,
                                   worker_max_wait_ms=args.max_wait_ms, worker_metrics_port=args.metrics_port,
                                   clip_precision=args.precision, clip_compile=args.compile,
                                   worker_decode_device=args.decode_device, clip_pin_memory=args.pin_memory)


def install_signal_handlers(stop: threading.Event, grace_s: float) -> None:
    def on_signal(signum, _frame):
        if stop.is_set():
            return
        log.info("%s: finishing the batch in flight (grace %.0fs)", signal.Signals(signum).name, grace_s)
        stop.set()
        timer = threading.Timer(grace_s, _grace_exceeded)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _grace_exceeded() -> None:
    log.error("shutdown grace exceeded: exiting; unacknowledged jobs go back through the reaper")
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = build_settings(args)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s [" + settings.worker_id + "] %(message)s")
    for handler in logging.getLogger().handlers:  # open_clip narrates model creation on the root logger
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or "open_clip" not in r.pathname)
    from batcher.app import WorkerApp, StartupError

    stop = threading.Event()
    install_signal_handlers(stop, settings.worker_shutdown_grace)
    try:
        app = WorkerApp.start(settings, stop=stop)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2
    totals = app.run(burst=args.batch_mode, max_jobs=args.max_jobs)
    log.info("exiting: %d completed, %d failed, %d retried", totals.completed, totals.failed, totals.retried)
    return 0


if __name__ == "__main__":
    sys.exit(main())
