"""LitServe around clipq's encoder: ``python -m scripts.peers.litserve_server --port P``.

POST /predict with the multipart upload of clipq's API (``image_file``); answers ``{"vector":
[...]}``. LitServe batches up to ``--batch-size`` requests, waiting at most ``--window-ms`` for
them (``max_batch_size``, ``batch_timeout``); one inference worker on the device.
"""
from __future__ import annotations

import litserve as ls

from scripts.peers.model import PeerModel, server_args


class EmbedAPI(ls.LitAPI):
    def __init__(self, args) -> None:
        super().__init__(max_batch_size=args.batch_size, batch_timeout=args.window_ms / 1000)
        self.args = args

    def setup(self, device) -> None:
        self.model = PeerModel(self.args.model, self.args.device, self.args.threads, self.args.batch_size)

    def decode_request(self, request):
        return self.model.decode(request["image_file"].file.read())

    def batch(self, inputs):
        return inputs

    def predict(self, x):
        return self.model.embed(x)

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return {"vector": output}


def main() -> None:
    args = server_args(__doc__)
    accelerator = "cuda" if args.device.startswith("cuda") else "cpu"
    server = ls.LitServer(EmbedAPI(args), accelerator=accelerator, devices=1, workers_per_device=1,
                          timeout=600)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
