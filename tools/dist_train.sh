#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NPROC [train.py args...]
# One process per GPU; without CUDA, NPROC CPU processes over gloo. See dist_run.sh for the variables.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG NPROC [train.py args...]" >&2
  exit 2
fi
here=$(dirname "$0")
exec "$here/dist_run.sh" "$2" "$here/train.py" "$1" --launcher pytorch "${@:3}"
