#!/usr/bin/env bash
# Creates or repairs the project virtualenv at .venv/ with the pinned stack.
# Idempotent: when nothing changed since the last successful run it returns at once.
# mmcv 2.1.0 (with ops) has no wheel for torch 2.14, so it is built from the sdist once per *flavour*
# and kept in ${GHOSTDET_CACHE:-~/.cache/ghostdet}/wheels/FLAVOUR/ for every later install on this
# machine. The flavour names torch and the ops' device, e.g. torch2.14.1-cpu or torch2.14.1-cu130-sm90,
# so a CPU wheel is never installed for a GPU run or the reverse (ghostdet/utils/mmcv_build.py).
#   GHOSTDET_CUDA=1        CUDA ops (e.g. on a login node with nvcc and no GPU)
#   GHOSTDET_CUDA=0        CPU ops even when a GPU is visible
#   (unset)                CUDA ops when a GPU is visible, CPU ops otherwise
#   TORCH_CUDA_ARCH_LIST   the GPUs to compile for, e.g. "9.0" or "8.0;9.0" (default: the visible ones)
# A failed build keeps its objects in $GHOSTDET_CACHE/build/FLAVOUR: run the script again to resume.
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

flavour_of() { "$py" "$root/ghostdet/utils/mmcv_build.py" "$@"; }
# Ready when the stack imports and was installed from these files for the flavour wanted now (one process).
if [ -x "$py" ] && [ -f "$stamp" ] && ready=$("$py" -c 'import mmcv.ops, mmdet, mmpretrain, ghostdet
from ghostdet.utils.mmcv_build import wanted_flavour
print(wanted_flavour().name)' 2>/dev/null) && [ "$(cat "$stamp")" = "$want $ready" ]; then
  exit 0
fi
start=$(date +%s)

if ! [ -x "$py" ] || ! "$py" -c 'import pip' >/dev/null 2>&1; then
  step "creating virtualenv $venv"
  rm -rf "$venv"
  python3.11 -m venv "$venv" || fail "python3.11 -m venv"
fi
pip=("$py" -m pip --disable-pip-version-check)
if "$py" -c 'import torch' >/dev/null 2>&1; then  # a bad GHOSTDET_CUDA / arch list stops before any change
  flavour_of flavour >/dev/null || fail "choosing mmcv's ops (see the error above)"
fi
rm -f "$stamp"

step "installing torch + torchvision"
"${pip[@]}" install -q "pip>=24" "setuptools>=77,<81" wheel ninja || fail "build tools"
"${pip[@]}" install -q $(grep -E '^(torch|torchvision)==' "$root/requirements/stack.txt") || fail "torch"

wanted=$(flavour_of flavour) || fail "choosing mmcv's ops (see the error above)"
flavour=${wanted%% *}
arch_list=${wanted#* }
wheel_dir="$wheels/$flavour"
mmcv_whl=$(ls "$wheel_dir"/mmcv-2.1.0-*.whl 2>/dev/null | head -1 || true)
if [ -z "$mmcv_whl" ]; then
  src="$cache/build/$flavour/mmcv-2.1.0"
  if ! [ -f "$src/setup.py" ]; then
    tmp=$(mktemp -d)
    "${pip[@]}" download -q --no-deps --no-build-isolation --no-binary :all: mmcv==2.1.0 -d "$tmp" || fail "mmcv sdist download"
    mkdir -p "$(dirname "$src")"
    tar -xzf "$tmp"/mmcv-2.1.0.tar.gz -C "$(dirname "$src")" || fail "mmcv sdist unpack"
    rm -rf "$tmp"
    # torch 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  fi
  build_env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
  if [ -n "$arch_list" ]; then
    step "building mmcv 2.1.0 with CUDA ops for $arch_list ($flavour; about 1 h per architecture on 2 cores)"
    command -v nvcc >/dev/null || fail "CUDA ops need nvcc (the CUDA toolkit) on PATH"
    cuda_home=${CUDA_HOME:-}
    [ -n "$cuda_home" ] || { [ -x /usr/local/cuda/bin/nvcc ] && cuda_home=/usr/local/cuda; } \
      || cuda_home=$(dirname "$(dirname "$(command -v nvcc)")")
    # The toolkit may lack headers that torch's CUDA headers include (cusparse.h, cublas_v2.h...):
    # the nvidia-* packages torch installed carry them.
    nvidia_include=$("$py" -c 'import glob, os, nvidia; print(os.pathsep.join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "include")))))') \
      || fail "finding the nvidia-* packages' headers"
    build_env+=(FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch_list" CUDA_HOME="$cuda_home"
                CPATH="$nvidia_include${CPATH:+:$CPATH}")
  else
    step "building mmcv 2.1.0 with CPU ops ($flavour; ~11 min on 2 cores)"
    build_env+=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)  # mmcv builds CUDA ops whenever it sees a GPU
  fi
  (cd "$src" && env "${build_env[@]}" "${pip[@]}" wheel -q --no-build-isolation --no-deps -w "$src/dist-$flavour" .) \
    || fail "mmcv build (run the script again to resume from the objects already compiled)"
  mkdir -p "$wheel_dir"
  mv "$src/dist-$flavour"/mmcv-2.1.0-*.whl "$wheel_dir"/ || fail "mmcv wheel cache"
  rm -rf "$cache/build/$flavour"
  mmcv_whl=$(ls "$wheel_dir"/mmcv-2.1.0-*.whl | head -1)
fi

step "installing mmcv, the OpenMMLab stack and ghostdet"
# Forced: the other flavour of the same version may be installed already.
"${pip[@]}" install -q --force-reinstall --no-deps "$mmcv_whl" && "${pip[@]}" install -q "$mmcv_whl" \
  || fail "mmcv wheel install"
"${pip[@]}" install -q -r "$root/requirements/stack.txt" || fail "stack"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$root" || fail "ghostdet (pip install -e .)"
"$py" -c 'import mmcv.ops, mmdet, mmpretrain, ghostdet' || fail "import check"
ops=$(flavour_of installed) && [ "$ops" = "$([ -n "$arch_list" ] && echo cuda || echo cpu)" ] \
  || fail "the installed mmcv has $ops ops, not those of $flavour: delete $wheel_dir and run again"
echo "$want $flavour" > "$stamp"
step "ready in $(( $(date +%s) - start ))s: $venv"
