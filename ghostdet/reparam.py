"""Fuse re-parameterizable modules of any model, and describe the fused model as a config.

Convention (mmpretrain's RepVGG/MobileOne, mmyolo, ghostdet): a module with training-time branches has a
``switch_to_deploy()`` that fuses it in place, and its config takes ``deploy=True`` to build the fused form.

Everything that turns a training checkpoint into a deploy checkpoint lives here, so that
:class:`~ghostdet.engine.ReparamCheckpointHook` (on every save) and ``tools/reparameterize.py``
(offline) do exactly the same: build the unfused deploy-source model on the CPU, load the weights
strictly, fuse, and write ``<name>_deploy.pth`` atomically next to a deploy config.
"""
import copy
import inspect
import os
import os.path as osp
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.model import is_model_wrapper
from torch import Tensor

from mmdet.registry import MODELS

try:  # mmpretrain's own types (``default_scope='mmpretrain'`` configs)
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
except ImportError:
    PRETRAIN_MODELS = None

StateDict = Dict[str, Tensor]

DEPLOY_SUFFIX = '_deploy'
DEPLOY_CONFIG_NAME = 'deploy_config.py'
STUDENT_KEY = 'student'
# Hooks that only act while training: in a deploy config they would cost memory (EMA's model copy)
# or try to fuse an already fused model.
TRAINING_ONLY_HOOKS = ('ReparamCheckpointHook', 'EMAHook')
# Knowledge-distillation hooks (schedules, teacher handling) are recognised by name.
KD_HOOK_NAME = re.compile(r'Distill|KD|Teacher')
# Names of a dense head's outputs, by position (mmdet convention: scores first, then boxes).
HEAD_OUTPUT_NAMES = ('cls_score', 'bbox_pred')


class WeightsMismatchError(ValueError):
    """A checkpoint whose weights do not fit the model built from the config."""


def _reparam_modules(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if callable(getattr(m, 'switch_to_deploy', None))]


def count_reparam_leaves(model: nn.Module) -> int:
    """Number of innermost re-parameterizable modules (those with no such module inside)."""
    fusable = _reparam_modules(model)
    ids = {id(m) for m in fusable}
    return sum(not any(c is not m and id(c) in ids for c in m.modules()) for m in fusable)


def fuse_model(model: nn.Module) -> int:
    """Call ``switch_to_deploy()`` on every module that has one, innermost first; return how many
    innermost re-parameterizable modules were fused (0: nothing to fuse)."""
    num_leaves = count_reparam_leaves(model)
    for module in reversed(_reparam_modules(model)):  # modules() is pre-order: reversed = children first
        module.switch_to_deploy()
    return num_leaves


# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------
def is_distiller(model_cfg: dict) -> bool:
    """A distillation wrapper holds the detector to deploy under ``student``."""
    return isinstance(model_cfg, dict) and STUDENT_KEY in model_cfg


def deploy_source_config(cfg: Config) -> ConfigDict:
    """The (unfused) model config the deploy model comes from: a distiller's student, else ``model``.

    A student without its own data preprocessor gets the distiller's, which fed it in training.
    """
    model_cfg = copy.deepcopy(cfg.model)
    if not is_distiller(model_cfg):
        return model_cfg
    student = model_cfg[STUDENT_KEY]
    if 'data_preprocessor' not in student and 'data_preprocessor' in model_cfg:
        student['data_preprocessor'] = model_cfg['data_preprocessor']
    return student


def _registered_class(type_: Any) -> Optional[Callable]:
    """Resolve a config ``type`` through mmdet's (then mmpretrain's) MODELS; None if unknown."""
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    for registry in (MODELS, PRETRAIN_MODELS):
        if registry is None:
            continue
        try:
            found = registry.get(type_)
        except RuntimeError:  # mmengine's last resort (import by dotted path) failed
            found = None
        if found is not None:
            return found
    return None


def _accepts_deploy(type_: Any) -> bool:
    cls = _registered_class(type_)
    try:
        return cls is not None and 'deploy' in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no introspectable signature
        return False


def _set_deploy(node: Any) -> None:
    """Set ``deploy=True, init_cfg=None`` on every sub-config (recursively) whose class takes ``deploy``.

    A deploy model is loaded from its deploy checkpoint, never initialised from ImageNet weights.
    """
    if isinstance(node, dict):
        if 'type' in node and _accepts_deploy(node['type']):
            node['deploy'] = True
            node['init_cfg'] = None
        for value in node.values():
            _set_deploy(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _set_deploy(value)


def _is_training_only_hook(hook_cfg: Any) -> bool:
    if not isinstance(hook_cfg, dict):
        return False
    type_ = hook_cfg.get('type')
    name = (type_ if isinstance(type_, str) else getattr(type_, '__name__', '')).split('.')[-1]
    return name in TRAINING_ONLY_HOOKS or KD_HOOK_NAME.search(name) is not None


def to_deploy_config(cfg: Config) -> Config:
    """A copy of ``cfg`` that builds the fused model: ``deploy=True`` wherever a model class takes it,
    no pretrained ``init_cfg`` there, a distiller replaced by its student, and training-only hooks
    (this hook, EMA, KD hooks) dropped. ``load_from``/``resume`` are cleared: the deploy checkpoint is
    given explicitly (``tools/test.py <deploy config> <deploy checkpoint>``)."""
    deploy_cfg = copy.deepcopy(cfg)
    model_cfg = deploy_source_config(cfg)
    _set_deploy(model_cfg)
    deploy_cfg.model = model_cfg
    if 'custom_hooks' in deploy_cfg:
        deploy_cfg.custom_hooks = [h for h in deploy_cfg.custom_hooks if not _is_training_only_hook(h)]
    deploy_cfg.load_from = None
    deploy_cfg.resume = False
    return deploy_cfg


# ---------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------
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


def _keep_rng_state():
    """Building a module draws initial weights from the global RNG; a hook doing it mid-training (or
    before the weights are initialised) must not change the training's random stream."""
    return torch.random.fork_rng(devices=[])


def build_cpu_model(model_cfg: dict) -> nn.Module:
    """Build a model on the CPU in eval mode without touching the global RNG."""
    with _keep_rng_state():
        model = MODELS.build(copy.deepcopy(model_cfg))
    model.eval()  # not chained: some mmdet backbones' train() returns None
    return model.cpu()


def is_deploy_checkpoint(checkpoint: dict, deploy_model: nn.Module) -> bool:
    """A checkpoint that is already fused: marked so by us, or whose keys are the fused model's."""
    if (checkpoint.get('meta') or {}).get('deploy', False):
        return True
    keys = set(checkpoint.get('state_dict', checkpoint))
    return keys == set(deploy_model.state_dict())


@dataclass
class FusedWeights:
    """A fused state dict and what the deploy checkpoint records about it."""
    state_dict: StateDict
    num_fused: int
    num_params: int
    seconds: float

    @property
    def size_mb(self) -> float:
        """Size of the weights (tensor bytes) in MiB."""
        return sum(t.numel() * t.element_size() for t in self.state_dict.values()) / 2**20


def fuse_weights(model: nn.Module) -> FusedWeights:
    """Fuse ``model`` (a private copy: it is modified) and return its weights.

    The folding runs in float64: BN folding adds and subtracts terms much larger than the result when
    running means are large, and float32 would keep their rounding error in the stored weights.
    """
    dtype = next(model.parameters()).dtype
    start = time.perf_counter()
    with _keep_rng_state():  # fusing builds new convs
        model.double()
        num_fused = fuse_model(model)
        model.to(dtype)
    seconds = time.perf_counter() - start
    return FusedWeights(model.state_dict(), num_fused, sum(p.numel() for p in model.parameters()), seconds)


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------
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
    text = deploy_cfg.pretty_text.encode('utf-8')
    atomic_write(path, lambda f: f.write(text))


# ---------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------
@dataclass
class OutputDiff:
    """Largest difference of one output tensor; ``rel`` is relative to the reference's largest value."""
    size: Tuple[int, int]
    name: str
    abs: float
    rel: float


def _named_tensors(outputs: Any, names: Sequence[str] = HEAD_OUTPUT_NAMES) -> List[Tuple[str, Tensor]]:
    """Flatten ``model._forward`` outputs, e.g. ``([cls per level], [box per level])`` ->
    ``cls_score[0], ..., bbox_pred[0], ...``."""
    if isinstance(outputs, Tensor):
        return [('output', outputs)]
    named = []
    for i, group in enumerate(outputs):
        name = names[i] if i < len(names) else f'output{i}'
        if isinstance(group, Tensor):
            named.append((name, group))
        else:
            named.extend((f'{name}[{level}]', t) for level, t in enumerate(group))
    return named


def _branch_forward(module: nn.Module, x: Tensor) -> Tensor:
    return module.act(module.forward_branches(x))


@contextmanager
def branch_by_branch(model: nn.Module) -> Iterator[None]:
    """Run blocks that offer ``forward_branches`` (ghostdet's ``RepConvBN``) branch by branch in eval
    mode too, where they fuse on the fly: a fused model must be checked against the sum of the
    branches, not against the same fusion."""
    blocks = [m for m in model.modules() if callable(getattr(m, 'forward_branches', None))]
    for block in blocks:
        block.forward = partial(_branch_forward, block)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


@torch.no_grad()
def compare_outputs(reference: nn.Module, candidate: nn.Module, sizes: Sequence[Tuple[int, int]],
                    seed: int = 0) -> List[OutputDiff]:
    """Run both models (eval mode; the reference's re-parameterizable blocks branch by branch) on the
    same random images of each (height, width); return the largest absolute and relative difference
    of every output tensor."""
    reference.eval()
    candidate.eval()
    generator = torch.Generator().manual_seed(seed)
    diffs = []
    for size in sizes:
        inputs = torch.randn(1, 3, *size, generator=generator)
        with branch_by_branch(reference):
            expected = _named_tensors(reference._forward(inputs))
        actual = _named_tensors(candidate._forward(inputs))
        if [(n, t.shape) for n, t in expected] != [(n, t.shape) for n, t in actual]:
            raise ValueError(f'The models give differently shaped outputs at input size {size}')
        for (name, a), (_, b) in zip(expected, actual):
            abs_diff = (a - b).abs().max().item()
            diffs.append(OutputDiff(tuple(size), name, abs_diff, abs_diff / max(a.abs().max().item(), 1e-12)))
    return diffs
