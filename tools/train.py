"""Train a detector: MMDetection 3.3.0's ``tools/train.py`` with ghostdet registered and checked input."""
import argparse
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.runner import find_latest_checkpoint

import ghostdet  # noqa: F401  registers ghostdet's modules even if the config has no custom_imports
from ghostdet.apis import (add_common_args, build_runner, fail, load_config, parse_runner_args,
                           require_checkpoint)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp', action='store_true', default=False, help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not specify, try to auto resume from the '
        'latest checkpoint in the work directory.')
    add_common_args(parser)
    return parse_runner_args(parser)


def enable_auto_scale_lr(cfg: Config) -> None:
    if not all(key in (cfg.get('auto_scale_lr') or {}) for key in ('enable', 'base_batch_size')):
        fail('--auto-scale-lr needs auto_scale_lr = dict(enable=..., base_batch_size=...) in the config')
    cfg.auto_scale_lr.enable = True


def enable_amp(cfg: Config, gpu_visible: bool) -> None:
    """MMEngine's AmpOptimWrapper (fp16 by default; ``optim_wrapper.dtype='bfloat16'`` for bf16) runs on
    GPUs only: without one, stop here rather than in the Runner's assertion."""
    if not gpu_visible:
        fail('--amp trains in mixed precision on a GPU (MMEngine\'s AmpOptimWrapper refuses the CPU) and no '
             'GPU is visible: drop --amp, or run on a GPU machine')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def set_resume(cfg: Config, resume: str) -> None:
    """Unlike MMEngine, which starts from scratch when ``auto`` finds nothing, stop with a message."""
    if resume == 'auto':
        latest = find_latest_checkpoint(cfg.work_dir)
        if latest is None:
            fail(f'--resume: no checkpoint to resume from in {osp.abspath(cfg.work_dir)} '
                 '(no last_checkpoint file); give a checkpoint path or drop --resume')
        named_in = osp.join(cfg.work_dir, 'last_checkpoint')
        require_checkpoint(latest, f'--resume: the checkpoint named in {named_in},')
        cfg.load_from = None
    else:
        require_checkpoint(resume, '--resume: checkpoint')
        cfg.load_from = resume
    cfg.resume = True


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg, torch.cuda.is_available())
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    if args.resume is not None:
        set_resume(cfg, args.resume)
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
