"""Helpers behind the command-line tools."""
from .runner_setup import (add_common_args, build_runner, fail, load_config, parse_runner_args,
                           read_config, require_checkpoint, setup_distributed)

__all__ = [
    'add_common_args', 'build_runner', 'fail', 'load_config', 'parse_runner_args', 'read_config',
    'require_checkpoint',
    'setup_distributed'
]
