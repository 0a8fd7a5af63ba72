# Sourced by run.sh and test.sh: create .venv and install the project into it, from nothing.
# torch comes first and pinned: these machines serve torch 2.14.1 from local disk.
# Usage: ensure_venv EXTRAS   (e.g. "api,worker,tools")
ensure_venv() {
  local extras="$1" py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$py" -m venv .venv
  fi
  local stamp=".venv/.clipq-installed-${extras//,/-}"
  local want
  want="$(cat pyproject.toml scripts/_venv.sh | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing torch and clipq[$extras] into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
    .venv/bin/python -m pip install -q -e ".[$extras]"
    echo "$want" > "$stamp"
  fi
}
