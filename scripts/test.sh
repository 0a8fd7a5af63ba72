#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite. Extra arguments go to pytest.
# A Redis server is started by the test fixtures unless REDIS_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv "api,worker,test,tools,client"
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
