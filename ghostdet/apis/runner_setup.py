"""What ``tools/train.py`` and ``tools/test.py`` share: arguments, config loading, runner building.

Behaves like MMDetection 3.3.0's tools, plus: clear messages for a missing config or checkpoint and
for CPU-only mmcv ops on a GPU machine, and multi-process training on CPU (``--launcher pytorch``
without CUDA), which MMEngine 0.10.7 cannot start by itself (its ``init_dist`` selects a CUDA device
and its DDP wrapper gets ``device_ids=[LOCAL_RANK]``).
"""
import argparse
import datetime
import os
import os.path as osp
from typing import NoReturn

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.hub import get_config
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner
from torch.nn.parallel import DistributedDataParallel

from mmdet.registry import RUNNERS
from mmdet.utils import setup_cache_size_limit_of_dynamo

from ..utils.mmcv_build import check_mmcv_ops

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def fail(message: str) -> NoReturn:
    """Stop with a one-line message instead of a traceback: the input, not the code, is wrong."""
    raise SystemExit(f'error: {message}')


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments that train.py and test.py take alike."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will '
        'be merged into config file. If the value to be overwritten is a list, it should be like '
        'key="[a,b]" or key=a,b. It also allows nested list/tuple values, e.g. '
        'key="[(a,b),(c,d)]". Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, then export ``--local-rank`` as ``LOCAL_RANK`` unless the launcher has set it."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(args: argparse.Namespace) -> Config:
    """Read the config and apply ``--launcher``, ``--cfg-options`` and ``--work-dir``."""
    setup_cache_size_limit_of_dynamo()
    cfg = read_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def read_config(path: str) -> Config:
    """A config file, or a package's config (``mmdet::retinanet/x.py``) as ``_base_`` resolves it."""
    if '::' in path:
        return get_config(path)
    if not osp.isfile(path):
        fail(f'config file {path} does not exist')
    return Config.fromfile(path)


def require_checkpoint(path: str, what: str = 'checkpoint') -> None:
    """Fail before building the Runner on a local checkpoint that does not exist (URLs: MMEngine)."""
    if '://' not in path and not osp.isfile(path):
        fail(f'{what} {path} does not exist')


def setup_distributed(cfg: Config) -> None:
    """Check ``--launcher pytorch``'s environment and, without CUDA, start the gloo group here.

    The Runner skips its own ``init_dist`` when a group exists; DDP needs ``device_ids=None`` for
    CPU modules. One thread per process, since the processes already share the cores.
    """
    if cfg.get('launcher', 'none') != 'pytorch':
        return
    missing = [key for key in TORCHRUN_ENV if key not in os.environ]
    if missing:
        fail(f'--launcher pytorch needs the environment variables {missing}; start the job with '
             'tools/dist_train.sh, tools/dist_test.sh or torchrun')
    if torch.cuda.is_available() or torch_dist.is_initialized():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    timeout = env_cfg.get('dist_cfg', {}).get('timeout', 1800)
    env_cfg['dist_cfg'] = dict(backend='gloo', timeout=timeout)
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        backend='gloo',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        timeout=datetime.timedelta(seconds=timeout))
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif issubclass(MODEL_WRAPPERS.get(wrapper.get('type', 'MMDistributedDataParallel')),
                    DistributedDataParallel):
        wrapper.setdefault('device_ids', None)


def build_runner(cfg: Config) -> Runner:
    """Build the Runner named by ``runner_type`` (default: MMEngine's ``Runner``), after checking that
    mmcv's ops can run where the model will."""
    try:
        check_mmcv_ops()
    except RuntimeError as error:
        fail(str(error))
    setup_distributed(cfg)
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
