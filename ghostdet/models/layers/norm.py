"""The backbone's norm layers: mmcv-style ``norm_cfg``, with a batch norm that is as exact in train mode
on channels-last CPU maps as on NCHW ones."""
import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmdet.utils import ConfigType
from torch import Tensor

DEFAULT_NORM = dict(type='BN', requires_grad=True)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and checkpoint keys) whose train-mode statistics keep
    the reference's precision on channels-last maps.

    PyTorch's CPU batch norm sums a channels-last map in float32 row after row: its train-mode outputs and
    gradients are 10-40x further from a float64 run than its NCHW kernel's (measured on GhostNetV3's stage
    ends; the authors' GhostNetV3 runs NCHW). So a channels-last CPU map is normalized in train mode through
    an NCHW copy; eval mode (a per-channel affine map, no statistics) and other devices run as they are."""

    def forward(self, x: Tensor) -> Tensor:
        if (self.training and x.device.type == 'cpu' and x.dim() == 4 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def build_norm(norm_cfg: ConfigType, channels: int) -> nn.Module:
    """The norm layer of an mmcv ``norm_cfg``: ``BN`` gives :class:`BatchNorm2d` (same keys and arguments as
    mmcv's), any other type (``SyncBN``, ``GN``, ...) mmcv's own layer."""
    if norm_cfg.get('type') not in ('BN', 'BN2d'):
        return build_norm_layer(norm_cfg, channels)[1]
    options = {k: v for k, v in norm_cfg.items() if k not in ('type', 'requires_grad')}
    norm = BatchNorm2d(channels, **options)
    norm.requires_grad_(norm_cfg.get('requires_grad', True))
    return norm
