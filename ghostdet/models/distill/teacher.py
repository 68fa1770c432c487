"""The teacher of a distiller: built and loaded when the model is built, frozen, outside the module tree.

Building and loading at model build time means a wrong config or a missing checkpoint stops the Runner
before the first iteration (mmdet's ``kd_one_stage.py`` does the same). The teacher is kept in a holder
that is not an ``nn.Module``: it is then absent from ``state_dict()`` (checkpoints), ``parameters()``
(the optimizer) and DDP, which is what mmdet achieves by overriding ``__setattr__``.
"""
import copy
import os
import os.path as osp
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.registry import Registry
from mmengine.runner.checkpoint import _load_checkpoint
from torch import Tensor

from ...deploy import checkpoint_weights, fuse_model, load_weights

TeacherConfig = Union[str, Path, dict, Config]


class TeacherError(ValueError):
    """A teacher that cannot be built or loaded (raised when the model is built, before training)."""


def _read_config(path: str) -> Config:
    external = '::' in path  # e.g. mmdet::retinanet/retinanet_r50_fpn_1x_coco.py, resolved as a base is
    if not external and not osp.isfile(path):
        raise TeacherError(f'teacher_config {path} does not exist (relative paths start from the '
                           f'working directory {os.getcwd()})')
    try:
        return Config.fromstring(f'_base_ = {path!r}', '.py') if external else Config.fromfile(path)
    except Exception as err:
        raise TeacherError(f'teacher_config {path} cannot be read: {type(err).__name__}: {err}') from err


def teacher_model_config(teacher_config: TeacherConfig) -> Tuple[ConfigDict, str]:
    """The teacher's model config and a name for messages.

    ``teacher_config`` is a config file (``pkg::`` paths allowed), a full config (with ``model``) or a
    model config (with ``type``). A full config's top-level ``data_preprocessor`` is merged into its
    model as the Runner does (mmpretrain configs keep it there).
    """
    if isinstance(teacher_config, (str, Path)):
        name = str(teacher_config)
        cfg = _read_config(name)
    elif isinstance(teacher_config, Config):
        name, cfg = teacher_config.filename or 'the teacher config', teacher_config
    elif isinstance(teacher_config, dict):
        name = 'the teacher config'
        cfg = teacher_config if 'model' in teacher_config else dict(model=teacher_config)
    else:
        raise TeacherError('teacher_config must be a config file path, a config or a model config dict, '
                           f'got {type(teacher_config).__name__}')
    model = cfg.get('model')
    if not isinstance(model, dict) or 'type' not in model:
        raise TeacherError(f'{name} has no model config (a dict with a type)')
    model = ConfigDict(copy.deepcopy(model))
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', copy.deepcopy(cfg['data_preprocessor']))
    return model, name


def check_teacher_checkpoint(checkpoint: Optional[str]) -> None:
    """Fail before building anything on a missing checkpoint (URLs are checked when downloaded)."""
    if not checkpoint:
        raise TeacherError('teacher_checkpoint is required: a teacher with random weights teaches nothing. '
                           'Give the path or URL of the trained teacher.')
    if '://' not in checkpoint and not osp.isfile(checkpoint):
        raise TeacherError(f'teacher_checkpoint {checkpoint} does not exist: train the teacher first '
                           '(tools/train.py <teacher config>) or give the path or URL of its checkpoint')


def build_teacher(teacher_config: TeacherConfig, teacher_checkpoint: str, registry: Registry) -> nn.Module:
    """Build the teacher, load its checkpoint strictly, freeze it (eval, no grad) and fuse its
    re-parameterizable blocks (it is never trained again: same outputs, less compute).

    Building and fusing draw random initial weights: the global random state is restored afterwards,
    so the student starts and trains as in a run without distillation with the same seed.
    """
    check_teacher_checkpoint(teacher_checkpoint)
    model_cfg, name = teacher_model_config(teacher_config)
    with torch.random.fork_rng(devices=[]):
        try:
            teacher = registry.build(model_cfg)
        except Exception as err:
            raise TeacherError(
                f'The teacher model of {name} does not build: {type(err).__name__}: {err}') from err
        try:
            checkpoint = _load_checkpoint(teacher_checkpoint, map_location='cpu')
        except Exception as err:
            raise TeacherError(f'teacher_checkpoint {teacher_checkpoint} cannot be loaded: '
                               f'{type(err).__name__}: {err}') from err
        load_weights(teacher, checkpoint_weights(checkpoint), f'teacher_checkpoint {teacher_checkpoint}')
        teacher.eval()  # not chained: some mmdet backbones' train() returns None
        teacher.requires_grad_(False)
        num_fused = fuse_model(teacher)
    print_log(f'Teacher {type(teacher).__name__} from {name}, weights {teacher_checkpoint}'
              f'{f", {num_fused} re-parameterizable blocks fused" if num_fused else ""}', logger='current')
    return teacher


@dataclass
class Normalization:
    """How a data preprocessor turns loaded images (BGR, 0-255) into model inputs."""
    mean: Optional[Tensor]  # (C, 1, 1); None: no normalisation
    std: Optional[Tensor]
    swap_channels: bool  # BGR -> RGB
    pad_value: float

    @classmethod
    def of(cls, preprocessor: nn.Module) -> 'Normalization':
        """Read from MMEngine's ``ImgDataPreprocessor`` and its mmdet / mmpretrain subclasses."""
        normalize = getattr(preprocessor, '_enable_normalize', False)
        swap = getattr(preprocessor, '_channel_conversion', False) or getattr(preprocessor, 'to_rgb', False)
        return cls(preprocessor.mean.detach().cpu().clone() if normalize else None,
                   preprocessor.std.detach().cpu().clone() if normalize else None, bool(swap),
                   float(getattr(preprocessor, 'pad_value', 0)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Normalization):
            return NotImplemented
        same_stats = (self.mean is None) == (other.mean is None) and (
            self.mean is None or torch.equal(self.mean, other.mean) and torch.equal(self.std, other.std))
        return same_stats and self.swap_channels == other.swap_channels and self.pad_value == other.pad_value


def renormalize(inputs: Tensor, source: Normalization, target: Normalization,
                data_samples: Optional[Sequence] = None) -> Tensor:
    """Inputs normalised for ``source`` -> normalised for ``target`` (e.g. a caffe-style BGR teacher
    for an RGB student). Padding (beyond each sample's ``img_shape``) gets the target's pad value."""
    if source == target:
        return inputs
    x = inputs.clone() if source.mean is None else inputs * source.std.to(inputs) + source.mean.to(inputs)
    if source.swap_channels != target.swap_channels:
        x = x.flip(1)
    if target.mean is not None:
        x = (x - target.mean.to(x)) / target.std.to(x)
    for i, sample in enumerate(data_samples or ()):
        img_shape = sample.metainfo.get('img_shape')
        if img_shape is not None:
            height, width = img_shape[:2]
            x[i, :, height:, :] = target.pad_value
            x[i, :, :, width:] = target.pad_value
    return x


class FrozenTeacher:
    """Holds the teacher outside the student's module tree and prepares its inputs.

    Deep copies share the teacher (EMAHook deep-copies the whole model; a frozen teacher needs no
    copy). The teacher follows the student's inputs to their device at the first batch there.
    """

    def __init__(self, model: nn.Module, student_preprocessor: nn.Module) -> None:
        self.model = model
        self.student_normalization = Normalization.of(student_preprocessor)
        self.normalization = Normalization.of(model.data_preprocessor)
        self._device = torch.device('cpu')

    def __deepcopy__(self, memo: dict) -> 'FrozenTeacher':
        return self

    def inputs(self, student_inputs: Tensor, data_samples: Optional[Sequence] = None) -> Tensor:
        """The student's batch as the teacher's data preprocessor would have made it, on its device."""
        if student_inputs.device != self._device:
            self.model.to(student_inputs.device)
            self._device = student_inputs.device
        return renormalize(student_inputs, self.student_normalization, self.normalization, data_samples)
