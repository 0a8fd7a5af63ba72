#!/usr/bin/env bash
# Run clipq on one machine: a local Redis (unless REDIS_URL is set), the API on
# 127.0.0.1:8000 (API_HOST, API_PORT) and one worker with embedded Qdrant in ./data/qdrant.
# Indexes the sample photos, shows their statuses, the stats and a search, then serves until
# Ctrl-C. Logs: data/logs/. `scripts/run.sh --smoke` stops after the demo (exit 0 = it all worked).
# The supervisor is scripts/run_local.py (python -m scripts.run_local --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv "api,worker,tools"
exec .venv/bin/python -m scripts.run_local "$@"
