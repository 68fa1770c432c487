"""The one reader of the scalars MMEngine's ``LoggerHook`` writes to ``<log_dir>/vis_data/scalars.json``.

MMEngine gives every run its own ``log_dir``, ``<work_dir>/<timestamp>/``, so a work dir trained in
more than once holds several; a work dir stands for its latest run.
"""
import glob
import json
import os.path as osp
from typing import List

SCALARS = osp.join('vis_data', 'scalars.json')


def scalars_file(log_dir_or_work_dir: str) -> str:
    """The scalars file of a run's ``log_dir``, or of the latest run in a work dir."""
    direct = osp.join(log_dir_or_work_dir, SCALARS)
    if osp.isfile(direct):
        return direct
    runs = sorted(glob.glob(osp.join(log_dir_or_work_dir, '*', SCALARS)))  # timestamps sort by time
    if not runs:
        raise FileNotFoundError(f'no {SCALARS} in {log_dir_or_work_dir} or in its run folders')
    return runs[-1]


def read_scalars(log_dir_or_work_dir: str) -> List[dict]:
    """Every logged record in order: training iterations (with ``loss``) and validation results."""
    with open(scalars_file(log_dir_or_work_dir)) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_records(records: List[dict]) -> List[dict]:
    """The records of training iterations; validation records carry metrics, not a loss."""
    return [record for record in records if 'loss' in record]
