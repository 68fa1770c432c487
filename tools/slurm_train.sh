#!/usr/bin/env bash
# Usage: [GPUS=16 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# One SLURM task per GPU over as many nodes as GPUS / GPUS_PER_NODE; MMEngine reads the ranks and the
# master address from SLURM's variables (--launcher slurm). PYTHON picks the interpreter (default: python).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
  exit 2
fi
gpus=${GPUS:-8}
per_node=${GPUS_PER_NODE:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
# SRUN_ARGS is split into words on purpose: several srun options in one variable.
# shellcheck disable=SC2086
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
exec srun --partition="$1" --job-name="$2" \
  --gres="gpu:$per_node" --ntasks="$gpus" --ntasks-per-node="$per_node" \
  --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "${PYTHON:-python}" -u "$root/tools/train.py" "$3" --work-dir="$4" --launcher=slurm "${@:5}"
