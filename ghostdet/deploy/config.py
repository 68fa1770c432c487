"""The deploy config: the training config rewritten to build the fused model.

A distiller is replaced by its student, every model class that takes ``deploy`` gets ``deploy=True``,
and training-only hooks are dropped.
"""
import copy
import inspect
import re
from typing import Any, Callable, Optional

from mmengine.config import Config, ConfigDict

from mmdet.registry import MODELS

try:  # mmpretrain's own types (``default_scope='mmpretrain'`` configs)
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
except ImportError:
    PRETRAIN_MODELS = None

STUDENT_KEY = 'student'
# Hooks that only act while training: in a deploy config they would cost memory (EMA's model copy), try
# to fuse an already fused model or switch a training pipeline (RTMDet's and YOLOX's recipes).
TRAINING_ONLY_HOOKS = ('ReparamCheckpointHook', 'EMAHook', 'PipelineSwitchHook', 'YOLOXModeSwitchHook', 'SyncNormHook')
# Knowledge-distillation hooks (schedules, teacher handling) are recognised by name.
KD_HOOK_NAME = re.compile(r'Distill|KD|Teacher')


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
    (ReparamCheckpointHook, EMA, KD hooks) dropped. ``load_from``/``resume`` are cleared: the deploy
    checkpoint is given explicitly (``tools/test.py <deploy config> <deploy checkpoint>``)."""
    deploy_cfg = copy.deepcopy(cfg)
    model_cfg = deploy_source_config(cfg)
    _set_deploy(model_cfg)
    deploy_cfg.model = model_cfg
    if 'custom_hooks' in deploy_cfg:
        deploy_cfg.custom_hooks = [h for h in deploy_cfg.custom_hooks if not _is_training_only_hook(h)]
    deploy_cfg.load_from = None
    deploy_cfg.resume = False
    return deploy_cfg
