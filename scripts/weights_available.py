#!/usr/bin/env python3
"""Exit 0 when CLIP_PRETRAINED can be loaded without surprises: `none`, a local file, a tag
already in the Hugging Face cache, or a tag with the hub reachable. Exit 1 otherwise."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path


def main() -> int:
    tag = os.environ.get("CLIP_PRETRAINED", "laion2b_s34b_b79k")
    model = os.environ.get("CLIP_MODEL", "ViT-B-32")
    if tag.lower() == "none" or Path(tag).is_file():
        return 0
    try:
        import open_clip

        hf = open_clip.get_pretrained_cfg(model, tag).get("hf_hub", "").strip("/")
    except Exception:
        hf = ""
    cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    if hf and (cache / ("models--" + hf.replace("/", "--"))).is_dir():
        return 0
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return 0
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
