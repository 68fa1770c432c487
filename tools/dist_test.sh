#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
# One process per GPU; without CUDA, NPROC CPU processes over gloo. See dist_run.sh for the variables.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT NPROC [test.py args...]" >&2
  exit 2
fi
here=$(dirname "$0")
exec "$here/dist_run.sh" "$3" "$here/test.py" "$1" "$2" --launcher pytorch "${@:4}"
