# Sourced by run.sh and test.sh: create .venv and install the project into it, from nothing.
# torch comes first and pinned: these machines serve torch 2.14.1 from local disk.
# Usage: ensure_venv EXTRAS   (e.g. "api,worker,tools")
_pip() {  # quiet, without the notes about this machine's local package folders
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}

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
    _pip install --upgrade pip
    _pip install "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
    _pip install -e ".[$extras]"
    echo "$want" > "$stamp"
  fi
}
