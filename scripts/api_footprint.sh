#!/usr/bin/env bash
# The API's installed size: `pip install .[api]` (no torch) into a throw-away venv, then the
# size of its site-packages, and a check that torch did not get in. Docker does not run on
# every machine; this is the Python part of Dockerfile.api's image.
#   scripts/api_footprint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --no-cache-dir ".[api]" 2> >(grep -v "^WARNING: Location" >&2)
site="$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if "$tmp/venv/bin/python" -c 'import torch' 2>/dev/null; then echo "torch got into .[api]" >&2; exit 1; fi
echo "api dependencies (.[api], site-packages, pip and setuptools included): $(du -sm "$site" | cut -f1) MB"
mapfile -t deps < <(ls -d "$site"/* | grep -v -E '/(pip|setuptools|_distutils_hack|distutils-precedence)')
echo "without pip and setuptools: $(du -smc "${deps[@]}" | tail -1 | cut -f1) MB"
