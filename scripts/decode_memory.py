#!/usr/bin/env python3
"""Peak memory of decoding one hostile image: a 16-bit greyscale PNG just under the pixel
limit (a few dozen KB on disk), decoded by ``batcher.decode`` as it is now and as it was at
``--before`` (a git revision), each in a fresh process, side by side.

Each process reads its peak resident set (``ru_maxrss``) before and after one ``decode`` of
the image to the model's input; the difference is what the decode added at its peak.

  .venv/bin/python -m scripts.decode_memory                  # 6320x6320 (39.9 MP), vs ab0b390
  .venv/bin/python -m scripts.decode_memory --side 4000 --before HEAD~3
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.lib import ROOT

CHILD = r"""
import importlib.util, resource, sys, time
import numpy as np
from PIL import Image
from models.preprocessing import Preprocessing
spec = importlib.util.spec_from_file_location("decode_under_test", sys.argv[1])
d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(d)
data = open(sys.argv[2], "rb").read()
prep = Preprocessing(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    out = d.decode(data, prep, 40_000_000)
    result = "decoded %s" % (out.shape,)
except Exception as exc:
    result = "refused: %s" % exc
took = time.perf_counter() - t0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, "%.2f" % took, result)
"""


def hostile_png(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    im = Image.new("I;16", (side, side))
    im.putpixel((0, 0), 40000)
    im.save(buf, "PNG")
    return buf.getvalue()


def measure(source: str, png: Path, folder: Path) -> tuple[int, float, str]:
    folder.mkdir()
    (folder / "decode_under_test.py").write_text(source)
    # run from the repository root: the decode under test imports this checkout's models and batcher
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder / "decode_under_test.py"), str(png)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split(maxsplit=2)
    return int(out[0]), float(out[1]), out[2].strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=6320, help="width and height of the PNG (default 6320: 39.9 MP)")
    p.add_argument("--before", default="ab0b390", help="git revision of the old decode.py")
    a = p.parse_args()
    before = subprocess.run(["git", "show", f"{a.before}:batcher/decode.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    now = (ROOT / "batcher" / "decode.py").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "hostile.png"
        png.write_bytes(hostile_png(a.side))
        print(f"16-bit greyscale PNG {a.side}x{a.side} ({a.side * a.side / 1e6:.1f} MP), "
              f"{png.stat().st_size / 1024:.0f} KB on disk")
        rows = {name: measure(src, png, Path(tmp) / name) for name, src in (("before", before), ("now", now))}
    print("| decode.py | peak added (MiB) | seconds | result |\n|---|---|---|---|")
    for name, (kib, took, result) in rows.items():
        print(f"| {name} | {kib / 1024:.0f} | {took:.2f} | {result} |")
    print(f"ratio now/before: {rows['now'][0] / max(rows['before'][0], 1):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
