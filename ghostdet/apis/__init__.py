"""What the command-line tools are made of.

``runner_setup`` (exported here) is shared by ``tools/train.py``, ``tools/test.py`` and the jobs;
the jobs' own steps are imported from their modules, ``ghostdet.apis.demo`` and
``ghostdet.apis.kd_experiment``, so that ``import ghostdet.apis`` stays light for train and test.
"""
from .runner_setup import (add_common_args, build_runner, fail, load_config, parse_runner_args,
                           read_config, require_checkpoint, setup_distributed)

__all__ = [
    'add_common_args', 'build_runner', 'fail', 'load_config', 'parse_runner_args', 'read_config',
    'require_checkpoint', 'setup_distributed'
]
