#!/usr/bin/env bash
# Run clipq on one machine: a local Redis (unless REDIS_URL is set), the API on :8000 and one
# worker with embedded Qdrant in ./data/qdrant. Indexes the sample photos, shows their
# statuses and the stats, then keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv "api,worker,tools"
PY=.venv/bin/python
API_PORT="${API_PORT:-8000}"
mkdir -p data
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "==> stopping (worker first: it finishes its batch; Redis last)"
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT="${REDIS_PORT:-6379}"
  echo "==> starting a local Redis on :$REDIS_PORT (AOF in data/redis)"
  # its own session: Ctrl-C must not kill Redis before the worker has acknowledged its batch
  setsid $PY scripts/local_redis.py --dir data/redis --port "$REDIS_PORT" > data/redis.log 2>&1 &
  pids+=($!)
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  for _ in $(seq 50); do $PY -c "import redis,os; redis.Redis.from_url(os.environ['REDIS_URL']).ping()" 2>/dev/null && break; sleep 0.2; done
fi

export CLIP_MODEL="${CLIP_MODEL:-ViT-B-32}" CLIP_PRETRAINED="${CLIP_PRETRAINED:-laion2b_s34b_b79k}"
if ! $PY scripts/weights_available.py; then
  echo "==> the CLIP weights '$CLIP_PRETRAINED' cannot be fetched from here and are not cached."
  echo "    Carrying on with CLIP_PRETRAINED=none: seeded random weights. Indexing and search work,"
  echo "    but similarity means nothing. See README, 'Model weights', to use real weights."
  export CLIP_PRETRAINED=none
fi

echo "==> starting the API on :$API_PORT"
ALLOW_ANONYMOUS="${ALLOW_ANONYMOUS:-$(case "${API_HOST:-127.0.0.1}" in (127.*|localhost|::1) echo true;; (*) echo false;; esac)}" $PY -m uvicorn api.main:app --host "${API_HOST:-127.0.0.1}" --port "$API_PORT" --log-level warning --timeout-keep-alive 30 &
pids+=($!)
echo "==> starting a worker ($CLIP_MODEL, $CLIP_PRETRAINED)"
# one machine for everything: the model yields the CPU to the API, which must answer in milliseconds
nice -n 10 $PY -m batcher &
pids+=($!)

$PY scripts/demo.py --api "http://127.0.0.1:$API_PORT"
echo "==> serving: API http://127.0.0.1:$API_PORT (docs at /docs), worker metrics :${WORKER_METRICS_PORT:-9100}/metrics. Ctrl-C stops."
wait
