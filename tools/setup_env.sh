#!/usr/bin/env bash
# Creates or repairs the project virtualenv at .venv/ with the pinned stack.
# Idempotent: when nothing changed since the last successful run it returns at once.
# mmcv 2.1.0 (with ops) has no wheel for torch 2.14, so it is built from the sdist once and the wheel
# is kept in ${GHOSTDET_CACHE:-~/.cache/ghostdet}/wheels for every later install on this machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py="$venv/bin/python"
cache="${GHOSTDET_CACHE:-$HOME/.cache/ghostdet}"
wheels="$cache/wheels"
stamp="$venv/.ghostdet-installed"
want=$(cat "$root/requirements/stack.txt" "$root/setup.py" "$0" | sha256sum | cut -d' ' -f1)

step() { echo "[setup_env] $*"; }
fail() { echo "[setup_env] FAILED at step: $1" >&2; exit 1; }

if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$py" -c 'import mmcv.ops, mmdet, mmpretrain, ghostdet' >/dev/null 2>&1; then
  exit 0
fi
start=$(date +%s)

if ! [ -x "$py" ] || ! "$py" -c 'import pip' >/dev/null 2>&1; then
  step "creating virtualenv $venv"
  rm -rf "$venv"
  python3.11 -m venv "$venv" || fail "python3.11 -m venv"
fi
pip=("$py" -m pip --disable-pip-version-check)
rm -f "$stamp"

step "installing torch + torchvision"
"${pip[@]}" install -q "pip>=24" "setuptools>=77,<81" wheel ninja || fail "build tools"
"${pip[@]}" install -q $(grep -E '^(torch|torchvision)==' "$root/requirements/stack.txt") || fail "torch"

mmcv_whl=$(ls "$wheels"/mmcv-2.1.0-*.whl 2>/dev/null | head -1 || true)
if [ -z "$mmcv_whl" ]; then
  step "building mmcv 2.1.0 with ops from the sdist (once per machine, ~11 min on 2 cores)"
  tmp=$(mktemp -d)
  "${pip[@]}" download -q --no-deps --no-build-isolation --no-binary :all: mmcv==2.1.0 -d "$tmp" || fail "mmcv sdist download"
  tar -xzf "$tmp"/mmcv-2.1.0.tar.gz -C "$tmp" || fail "mmcv sdist unpack"
  # torch 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$tmp/mmcv-2.1.0/setup.py"
  mkdir -p "$wheels"
  (cd "$tmp/mmcv-2.1.0" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
     "${pip[@]}" wheel -q --no-build-isolation --no-deps -w "$tmp/out" .) || fail "mmcv build"
  mv "$tmp"/out/mmcv-2.1.0-*.whl "$wheels"/ || fail "mmcv wheel cache"
  rm -rf "$tmp"
  mmcv_whl=$(ls "$wheels"/mmcv-2.1.0-*.whl | head -1)
fi

step "installing mmcv, the OpenMMLab stack and ghostdet"
"${pip[@]}" install -q "$mmcv_whl" || fail "mmcv wheel install"
"${pip[@]}" install -q -r "$root/requirements/stack.txt" || fail "stack"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$root" || fail "ghostdet (pip install -e .)"
"$py" -c 'import mmcv.ops, mmdet, mmpretrain, ghostdet' || fail "import check"
echo "$want" > "$stamp"
step "ready in $(( $(date +%s) - start ))s: $venv"
