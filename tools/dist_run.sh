#!/usr/bin/env bash
# Usage: tools/dist_run.sh NPROC SCRIPT [args...]; shared by dist_train.sh and dist_test.sh.
# Starts NPROC copies of SCRIPT with torchrun (python -m torch.distributed.run, so that PYTHON picks
# the interpreter; default: python). Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
NPROC=$1
SCRIPT=$2
root=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" \
  "$SCRIPT" "${@:3}"
