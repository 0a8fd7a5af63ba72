# Sourced by run.sh and test.sh: create .venv and install the project into it, from nothing.
# torch comes first and pinned: these machines serve torch 2.14.1 from local disk.
# Usage: ensure_venv EXTRAS   (e.g. "api,worker,tools")
# .venv/.clipq-installed records what was installed ("HASH extra extra ..."); nothing is
# installed again while pyproject.toml and this file are unchanged and the extras are there.
_pip() {  # quiet, without the notes about this machine's local package folders
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}

ensure_venv() {
  local py="${PYTHON:-python3}" stamp=".venv/.clipq-installed" want have=() need=()
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$py" -m venv .venv
  fi
  want="$(cat pyproject.toml scripts/_venv.sh | sha256sum | cut -c1-16)"
  { read -r -a have < "$stamp"; } 2>/dev/null || have=()
  [ "${have[0]:-}" = "$want" ] || have=("$want")
  for extra in ${1//,/ }; do
    [[ " ${have[*]:1} " == *" $extra "* ]] || need+=("$extra")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  local all; all="$(IFS=,; echo "${have[*]:1}${have[1]:+,}${need[*]}")"
  echo "==> installing torch and clipq[$all] into .venv (first time: a few minutes)"
  _pip install --upgrade pip
  _pip install "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
  _pip install -e ".[$all]"
  echo "$want ${have[*]:1} ${need[*]}" > "$stamp"
}
