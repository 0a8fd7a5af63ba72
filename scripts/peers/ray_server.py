"""Ray Serve around clipq's encoder: ``python -m scripts.peers.ray_server --port P``.

POST /embed with the multipart upload of clipq's API (``image_file``); answers ``{"vector":
[...]}``; GET /embed answers once the deployment is up. One replica; ``@serve.batch`` gathers up
to ``--batch-size`` images, waiting at most ``--window-ms`` for them, and decodes them in a
thread pool before one forward pass. ``max_ongoing_requests`` is raised to ``--max-in-flight``
(its default of 5 would cap every batch at 5). A local Ray cluster of its own is started and
shut down with the server (SIGTERM).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from scripts.peers.model import PeerModel, server_args


def build(args):
    from ray import serve

    gpus = 1 if args.device.startswith("cuda") else 0

    @serve.deployment(max_ongoing_requests=args.max_in_flight, num_replicas=1,
                      ray_actor_options={"num_cpus": 1, "num_gpus": gpus})
    class Embedder:
        def __init__(self) -> None:
            self.model = PeerModel(args.model, args.device, args.threads, args.batch_size)
            self.pool = ThreadPoolExecutor(args.decode_threads)

        async def __call__(self, request):
            if request.method == "GET":
                return {"status": "ready"}
            form = await request.form()
            return {"vector": await self.embed(await form["image_file"].read())}

        @serve.batch(max_batch_size=args.batch_size, batch_wait_timeout_s=args.window_ms / 1000)
        async def embed(self, images: list[bytes]) -> list[list[float]]:
            return self.model.embed(list(self.pool.map(self.model.decode, images)))

    return Embedder.bind()


def main() -> None:
    args = server_args(__doc__)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             object_store_memory=200 * 1024 * 1024, log_to_driver=True)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build(args), name="embed", route_prefix="/embed",
                  logging_config={"log_level": "WARNING", "enable_access_log": False})
        print(f"ready on 127.0.0.1:{args.port}", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
