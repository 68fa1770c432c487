"""Deploy checkpoints: the weights a deploy model is made from, strict loading with readable errors,
and the files written beside a training checkpoint.

:class:`~ghostdet.engine.ReparamCheckpointHook` (on every save) and ``tools/reparameterize.py``
(offline) do exactly the same with these: build the unfused deploy-source model on the CPU, load the
weights strictly, fuse, and write ``<name>_deploy.pth`` atomically next to a deploy config.
"""
import copy
import os
import os.path as osp
import uuid
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import _load_checkpoint

from mmdet.registry import MODELS

from .config import STUDENT_KEY, deploy_source_config, is_distiller, to_deploy_config
from .fuse import FusedWeights, StateDict, fuse_model, keep_rng_state

DEPLOY_SUFFIX = '_deploy'
DEPLOY_CONFIG_NAME = 'deploy_config.py'


class WeightsMismatchError(ValueError):
    """A checkpoint whose weights do not fit the model built from the config."""


def _strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def source_weights(state_dict: StateDict, cfg: Config) -> StateDict:
    """The part of a training state dict that the deploy-source model holds (a distiller's
    ``student.*`` without the prefix; KD-only weights such as connectors are left out)."""
    if is_distiller(cfg.model):
        return _strip_prefix(state_dict, f'{STUDENT_KEY}.')
    return state_dict


def deploy_state_dict(model: nn.Module) -> StateDict:
    """The live model's weights that a deploy model is made from: the student's for a distiller."""
    model = model.module if is_model_wrapper(model) else model
    return getattr(model, STUDENT_KEY, model).state_dict()


def checkpoint_weights(checkpoint: dict, ema: bool = True) -> StateDict:
    """The model weights of a runner checkpoint.

    With EMAHook, ``state_dict`` already holds the EMA weights (the evaluated ones) and
    ``ema_state_dict`` the raw ones under ``module.`` keys (EMAHook swaps them when saving).
    ``ema=False`` returns the raw weights; a checkpoint without EMA has only one set.
    """
    state_dict = checkpoint.get('state_dict', checkpoint)
    if ema or 'ema_state_dict' not in checkpoint:
        return state_dict
    return _strip_prefix(checkpoint['ema_state_dict'], 'module.')


def _first(items: Sequence[str], n: int = 8) -> str:
    more = f', ... ({len(items)} in total)' if len(items) > n else ''
    return ', '.join(items[:n]) + more


def weights_mismatch(model: nn.Module, state_dict: StateDict) -> List[str]:
    """Human-readable differences between a model's weights and a state dict (empty: they fit)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f'{k} {tuple(v.shape)} (model: {tuple(expected[k].shape)})' for k, v in state_dict.items()
              if k in expected and v.shape != expected[k].shape]
    problems = []
    for what, keys in (('missing in the checkpoint', missing), ('not in the model', unexpected),
                       ('with another shape', shapes)):
        if keys:
            problems.append(f'{len(keys)} key{"s" * (len(keys) > 1)} {what}: {_first(keys)}')
    return problems


def load_weights(model: nn.Module, state_dict: StateDict, source: str = 'the checkpoint') -> None:
    """Strict load whose error names the mismatching keys instead of loading a half-random model."""
    problems = weights_mismatch(model, state_dict)
    if problems:
        raise WeightsMismatchError(f'{source} does not match the model of the config:\n  ' +
                                   '\n  '.join(problems))
    model.load_state_dict(state_dict, strict=True)


def build_cpu_model(model_cfg: dict) -> nn.Module:
    """Build a model on the CPU in eval mode without touching the global RNG."""
    with keep_rng_state():
        model = MODELS.build(copy.deepcopy(model_cfg))
    model.eval()  # not chained: some mmdet backbones' train() returns None
    return model.cpu()


def is_deploy_checkpoint(checkpoint: dict, deploy_model: nn.Module) -> bool:
    """A checkpoint that is already fused: marked so by us, or whose keys are the fused model's."""
    if (checkpoint.get('meta') or {}).get('deploy', False):
        return True
    keys = set(checkpoint.get('state_dict', checkpoint))
    return keys == set(deploy_model.state_dict())


def read_checkpoint(path: str) -> dict:
    """A local or remote checkpoint on the CPU, through the safe loader (``FileNotFoundError`` for a missing
    file, :class:`~ghostdet.safe_load.UnsafeCheckpointError` for a file that is not plain weights)."""
    return _load_checkpoint(path, map_location='cpu')


def load_fused_model(cfg: Config, checkpoint: dict, source: str = 'the checkpoint') -> Tuple[nn.Module, int]:
    """The fused model of a config and a checkpoint (CPU, eval mode), and how many blocks were fused
    here (0: the checkpoint was a deploy checkpoint).

    A deploy checkpoint loads into the deploy form of the config. A training checkpoint with its
    training config is fused in memory; a training checkpoint with a deploy config cannot be loaded
    and raises :class:`WeightsMismatchError`.
    """
    deploy_model = build_cpu_model(to_deploy_config(cfg).model)
    if is_deploy_checkpoint(checkpoint, deploy_model):
        load_weights(deploy_model, checkpoint.get('state_dict', checkpoint), source)
        return deploy_model, 0
    source_model = build_cpu_model(deploy_source_config(cfg))
    if source_model.state_dict().keys() == deploy_model.state_dict().keys():  # config already fused
        problems = '\n  '.join(weights_mismatch(deploy_model, checkpoint.get('state_dict', checkpoint)))
        raise WeightsMismatchError(
            f'{source} does not fit the fused model of {cfg.filename or "the config"}:\n  {problems}\n'
            'For a training checkpoint: fuse first with tools/reparameterize.py, or pass the training '
            'config (the model is then fused in memory).')
    load_weights(source_model, source_weights(checkpoint_weights(checkpoint), cfg), source)
    return source_model, fuse_model(source_model)


def deploy_checkpoint_path(checkpoint_path: str, out_dir: Optional[str] = None) -> str:
    """``work_dir/epoch_12.pth`` -> ``work_dir/epoch_12_deploy.pth`` (or in ``out_dir``)."""
    stem, ext = osp.splitext(osp.basename(checkpoint_path))
    return osp.join(out_dir or osp.dirname(checkpoint_path), f'{stem}{DEPLOY_SUFFIX}{ext or ".pth"}')


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same directory, then rename: readers (and a crash)
    see the old file or the complete new one, never a truncated one."""
    tmp = osp.join(osp.dirname(osp.abspath(path)), f'.{osp.basename(path)}.{uuid.uuid4().hex}.tmp')
    try:
        with open(tmp, 'xb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def save_deploy_checkpoint(path: str, fused: FusedWeights, source_meta: dict, source_name: str,
                           deploy_cfg: Config) -> None:
    """Write ``{'meta', 'state_dict'}``; meta keeps the source's epoch/iter/dataset_meta and says
    ``deploy``, the parameter count, the weights' size and the source checkpoint."""
    meta = {k: v for k, v in source_meta.items() if k != 'cfg'}
    meta.update(deploy=True, num_params=fused.num_params, size_mb=round(fused.size_mb, 3),
                source_checkpoint=source_name, cfg=deploy_cfg.pretty_text)
    checkpoint = dict(meta=meta, state_dict=fused.state_dict)
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def write_deploy_config(path: str, deploy_cfg: Config) -> None:
    """Write the deploy config as a Python config file (atomically, as the checkpoints)."""
    text = deploy_cfg.pretty_text.encode('utf-8')
    atomic_write(path, lambda f: f.write(text))
