"""GhostNetV3 (arXiv 2404.11202) as an MMDetection / MMPretrain backbone.

Inference topology = GhostNetV2 (ghost modules, DFC attention, SE); training adds MobileOne-style
re-parameterizable branches in three places (ghost primary 1×1, ghost cheap depthwise 3×3, and the
stride-2 depthwise conv of a bottleneck), all built from :class:`RepConvBN`. Numerics follow the authors'
``ghostnetv3.py`` and timm's ``ghostnetv3_*`` exactly (see
``tests/test_models/test_backbones/test_ghostnetv3_parity.py``).
"""
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer
from mmdet.utils import ConfigType, OptConfigType
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ... import ops
from ...weights import convert_to_ghostdet
from ..layers.norm import DEFAULT_NORM, build_norm
from ..layers.rep_conv_bn import FoldCache, RepConvBN, fuse_conv_bn

# One row per bottleneck: (depthwise kernel, expansion channels, output channels, SE ratio, stride),
# grouped by stage; stage i ends at stride 2 ** (i + 1). Same table as the authors and timm.
ARCH_SETTING: Tuple[Tuple[Tuple[int, int, int, float, int], ...], ...] = (
    ((3, 16, 16, 0, 1), ),
    ((3, 48, 24, 0, 2), (3, 72, 24, 0, 1)),
    ((5, 72, 40, 0.25, 2), (5, 120, 40, 0.25, 1)),
    ((3, 240, 80, 0, 2), (3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1),
     (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1),
     (5, 960, 160, 0.25, 1)),
)
STEM_CHANNELS = 16
LAST_CONV_CHANNELS = 960
PUBLISHED_WIDTHS = (0.5, 1.0, 1.3, 1.6)
DEFAULT_ACT = dict(type='ReLU', inplace=True)
NUM_OUTPUTS = len(ARCH_SETTING) + 1  # five stage ends (strides 2..32) + the final 1×1 conv (index 5)


def make_divisible(value: float, divisor: int = 4) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def hard_sigmoid(x: Tensor) -> Tensor:
    return F.relu6(x + 3.) / 6.


def conv_bn(in_channels: int, out_channels: int, kernel_size, stride: int = 1, groups: int = 1,
            norm_cfg: ConfigType = DEFAULT_NORM) -> List[nn.Module]:
    """A bias-free conv and its norm as two list items (for ``nn.Sequential`` key layouts)."""
    padding = tuple(k // 2 for k in kernel_size) if isinstance(kernel_size, tuple) else kernel_size // 2
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            build_norm(norm_cfg, out_channels)]


class ConvBNSequential(nn.Sequential):
    """Conv-BN pairs (from :func:`conv_bn`, optionally followed by an activation) with ``nn.Sequential``'s
    key layout. A pair whose BN is in eval mode runs as one conv with the BN folded into its kernel (folded
    when first needed and cached, see :class:`FoldCache`): the BN's pass over the map is saved and
    checkpoints stay as they are."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__(*modules)
        self._fold_cache = FoldCache()

    def train(self, mode: bool = True) -> 'ConvBNSequential':
        self._fold_cache.clear()
        return super().train(mode)

    def forward(self, x: Tensor) -> Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module, following = modules[i], modules[i + 1] if i + 1 < len(modules) else None
            if self._foldable(module, following):
                sources = [module.weight, following.weight, following.bias, following.running_mean,
                           following.running_var, following.num_batches_tracked]
                x = module._conv_forward(x, *self._fold_cache.get(
                    i, sources, lambda: fuse_conv_bn(module.weight, following)))
                i += 2
            else:
                x = module(x)
                i += 1
        return x

    @staticmethod
    def _foldable(conv: nn.Module, bn: Optional[nn.Module]) -> bool:
        """A bias-free conv followed by an affine BN that normalizes with its running statistics, and no
        graph recorded (FLOP counting and ONNX export see the conv and BN modules)."""
        return (isinstance(conv, nn.Conv2d) and conv.bias is None and isinstance(bn, _BatchNorm)
                and not bn.training and bn.affine and bn.track_running_stats and not ops.graph_is_recorded())


class SqueezeExcite(nn.Module):
    """Channel gate: global pool, 1×1 reduce, ReLU, 1×1 expand, hard sigmoid."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        reduced = make_divisible(channels * ratio, 4)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.conv_expand(F.relu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * hard_sigmoid(gate)


class GhostModuleV3(BaseModule):
    """Ghost module: a 1×1 "primary" conv makes half the channels, a cheap depthwise 3×3 the rest.

    Both convs are :class:`RepConvBN`. With ``use_dfc`` the output is gated by DFC attention: a
    horizontal/vertical decoupled fully-connected branch computed at half resolution on the module input.
    """

    def __init__(self, in_channels: int, out_channels: int, act_cfg: OptConfigType, use_dfc: bool,
                 num_branches: int = 3, norm_cfg: ConfigType = DEFAULT_NORM, deploy: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        init_channels = math.ceil(out_channels / 2)
        self.primary = RepConvBN(in_channels, init_channels, 1, num_branches=num_branches, norm_cfg=norm_cfg,
                                 act_cfg=act_cfg, deploy=deploy)
        self.cheap = RepConvBN(init_channels, init_channels, 3, groups=init_channels, num_branches=num_branches,
                               norm_cfg=norm_cfg, act_cfg=act_cfg, deploy=deploy)
        self.dfc = ConvBNSequential(
            *conv_bn(in_channels, out_channels, 1, norm_cfg=norm_cfg),
            *conv_bn(out_channels, out_channels, (1, 5), groups=out_channels, norm_cfg=norm_cfg),
            *conv_bn(out_channels, out_channels, (5, 1), groups=out_channels, norm_cfg=norm_cfg),
        ) if use_dfc else None

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.dfc(F.avg_pool2d(x, kernel_size=2, stride=2))) if self.dfc is not None else None
        out = ops.ghost_module_output(x, self.primary, self.cheap, self.out_channels, gate)
        if out is not None:  # inference on the CPU: the lines below in one C++ pass
            return out
        primary = self.primary(x)
        out = torch.cat([primary, self.cheap(primary)], dim=1)
        if 2 * self.primary.out_channels != self.out_channels:  # odd widths only: ONNX copies even a no-op slice
            out = out[:, :self.out_channels]
        if gate is not None:
            out = out * F.interpolate(gate, size=out.shape[-2:], mode='nearest')
        return out


class GhostBottleneckV3(BaseModule):
    """ghost1 (expand, act, DFC) → [stride-2 depthwise RepConvBN] → [SE] → ghost2 (project) + shortcut."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel_size: int,
                 stride: int, se_ratio: float, use_dfc: bool, num_branches: int = 3,
                 norm_cfg: ConfigType = DEFAULT_NORM, act_cfg: ConfigType = DEFAULT_ACT,
                 deploy: bool = False, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.ghost1 = GhostModuleV3(in_channels, mid_channels, act_cfg=act_cfg, use_dfc=use_dfc,
                                    num_branches=num_branches, norm_cfg=norm_cfg, deploy=deploy)
        self.conv_dw = RepConvBN(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels,
                                 num_branches=num_branches, norm_cfg=norm_cfg,
                                 deploy=deploy) if stride > 1 else None
        self.se = SqueezeExcite(mid_channels, se_ratio) if se_ratio else None
        self.ghost2 = GhostModuleV3(mid_channels, out_channels, act_cfg=None, use_dfc=False,
                                    num_branches=num_branches, norm_cfg=norm_cfg, deploy=deploy)
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = ConvBNSequential(
                *conv_bn(in_channels, in_channels, kernel_size, stride, groups=in_channels, norm_cfg=norm_cfg),
                *conv_bn(in_channels, out_channels, 1, norm_cfg=norm_cfg))

    def _forward(self, x: Tensor) -> Tensor:
        out = self.ghost1(x)
        if self.conv_dw is not None:
            out = self.conv_dw(out)
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class GhostNetV3(BaseModule):
    """GhostNetV3 backbone.

    Outputs are stage ends (not timm's post-downsample taps): index 0..4 = strides 2, 4, 8, 16, 32, and
    index 5 = the final 1×1 conv-BN-ReLU to ``960 * widen_factor`` channels (stride 32, the classifier's
    input). ``GhostNetV3.out_channels_for(widen_factor, out_indices)`` gives the channel counts so configs
    need no hand-computed numbers.

    Args:
        widen_factor: width multiplier (published: 0.5, 1.0, 1.3, 1.6; any positive value works).
        out_indices: which outputs to return, increasing. Default (1, 2, 3, 4) for FPN ``start_level=1``.
        frozen_stages: freeze the stem and stages ``0..frozen_stages`` (-1: nothing frozen).
        norm_eval: keep every BN in eval mode during training (statistics unchanged).
        norm_cfg: every norm layer (mmcv style): ``BN`` (default), ``SyncBN`` (several GPUs: compact nets see
            few images per GPU), or ``GN`` (trains, but cannot be fused for deploy).
        act_cfg: the activation of the stem, the expanding ghost modules and the final conv (mmcv style;
            GhostNetV3: ReLU). SE keeps its ReLU and hard sigmoid, DFC its sigmoid.
        num_branches: parallel k×k conv-BN branches per re-parameterizable conv (GhostNetV3: 3).
        deploy: build the fused single-branch form (load fused checkpoints into this).
        with_cp: gradient checkpointing per bottleneck (less memory, slower).
        channels_last: keep weights and activations in NHWC memory format; same numbers, faster on CPU
            for the depthwise-heavy blocks (and what the outputs hand to the neck).
        zero_init_residual: start every bottleneck's last ghost module at zero (BN scales 0), so that each
            bottleneck begins as its shortcut, as mmdet's ResNet does; speeds up training from scratch
            and has no effect when pretrained weights are loaded.
        init_cfg: MMEngine init config, e.g. ``dict(type='Pretrained', checkpoint='ghostnetv3_100.pth')``.
    """

    def __init__(self, widen_factor: float = 1.0, out_indices: Sequence[int] = (1, 2, 3, 4),
                 frozen_stages: int = -1, norm_eval: bool = False, norm_cfg: ConfigType = DEFAULT_NORM,
                 act_cfg: ConfigType = DEFAULT_ACT, num_branches: int = 3,
                 deploy: bool = False, with_cp: bool = False, channels_last: bool = True,
                 zero_init_residual: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if init_cfg is None:
            init_cfg = [dict(type='Kaiming', layer='Conv2d'),
                        dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]
        super().__init__(init_cfg)
        self.widen_factor = widen_factor
        self.out_indices = self._check_out_indices(out_indices)
        if frozen_stages not in range(-1, len(ARCH_SETTING)):
            raise ValueError(f'frozen_stages must be in -1..{len(ARCH_SETTING) - 1}, '
                             f'got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.deploy = deploy
        self.channels_last = channels_last
        self.zero_init_residual = zero_init_residual
        self.out_channels = self.out_channels_for(widen_factor, self.out_indices)

        stem_channels = make_divisible(STEM_CHANNELS * widen_factor)
        self.stem = ConvBNSequential(*conv_bn(3, stem_channels, 3, stride=2, norm_cfg=norm_cfg),
                                     build_activation_layer(act_cfg))
        in_channels, layer_id = stem_channels, 0
        self.stages = nn.ModuleList()
        for stage_setting in ARCH_SETTING:
            blocks = []
            for kernel, expand, out, se_ratio, stride in stage_setting:
                out_channels = make_divisible(out * widen_factor)
                blocks.append(GhostBottleneckV3(
                    in_channels, make_divisible(expand * widen_factor), out_channels, kernel, stride,
                    se_ratio, use_dfc=layer_id > 1, num_branches=num_branches, norm_cfg=norm_cfg,
                    act_cfg=act_cfg, deploy=deploy, with_cp=with_cp))
                in_channels, layer_id = out_channels, layer_id + 1
            self.stages.append(nn.Sequential(*blocks))
        self.last_conv = ConvBNSequential(
            *conv_bn(in_channels, make_divisible(LAST_CONV_CHANNELS * widen_factor), 1, norm_cfg=norm_cfg),
            build_activation_layer(act_cfg)) if NUM_OUTPUTS - 1 in self.out_indices else None
        self._apply_memory_format()
        self._freeze_stages()

    def _apply_memory_format(self) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @staticmethod
    def _check_out_indices(out_indices: Sequence[int]) -> Tuple[int, ...]:
        indices = (out_indices, ) if isinstance(out_indices, int) else tuple(out_indices)
        valid = range(NUM_OUTPUTS)
        if not indices or any(not isinstance(i, int) or i not in valid for i in indices) \
                or list(indices) != sorted(set(indices)):
            raise ValueError(
                f'GhostNetV3 out_indices must be increasing, unique integers in 0..{NUM_OUTPUTS - 1} '
                f'(0-4: stage ends at strides 2/4/8/16/32, 5: final 1x1 conv), got {out_indices}')
        return indices

    @staticmethod
    def out_channels_for(widen_factor: float = 1.0,
                         out_indices: Sequence[int] = (1, 2, 3, 4)) -> List[int]:
        """Channel count of each requested output, e.g. (1.0, (1, 2, 3, 4)) -> [24, 40, 112, 160]."""
        if not isinstance(widen_factor, (int, float)) or isinstance(widen_factor, bool) \
                or not 0 < widen_factor <= 8:
            raise ValueError(f'GhostNetV3 widen_factor must be a number in (0, 8], got '
                             f'{widen_factor!r} (published widths: {PUBLISHED_WIDTHS})')
        channels = [make_divisible(stage[-1][2] * widen_factor) for stage in ARCH_SETTING]
        channels.append(make_divisible(LAST_CONV_CHANNELS * widen_factor))
        return [channels[i] for i in GhostNetV3._check_out_indices(out_indices)]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        if self.last_conv is not None:
            outs.append(self.last_conv(x))
        return tuple(outs)

    def init_weights(self) -> None:
        """Initialise; a ``Pretrained`` init_cfg loads strictly and accepts the authors', timm's or
        ghostdet's layout (converted on the fly), so a wrong file fails loudly instead of leaving random
        weights behind (MMEngine's own Pretrained init only logs missing keys)."""
        init_cfg = self.init_cfg
        if not (isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'):
            super().init_weights()
            if self.zero_init_residual:
                self._zero_init_last_ghost_modules()
            return
        self.load_pretrained(init_cfg['checkpoint'], init_cfg.get('prefix'))
        self._is_init = True

    @torch.no_grad()
    def _zero_init_last_ghost_modules(self) -> None:
        for block in self.modules():
            if isinstance(block, GhostBottleneckV3):
                for module in block.ghost2.modules():
                    if isinstance(module, (_BatchNorm, nn.GroupNorm)):
                        module.weight.zero_()

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None) -> None:
        """Load backbone weights strictly from a file of any supported layout."""
        if '://' not in checkpoint and not osp.isfile(osp.expanduser(checkpoint)):
            raise FileNotFoundError(
                f'GhostNetV3 pretrained weights {checkpoint} not found. Make them with '
                'tools/convert_weights.py SRC DST (official or timm ImageNet weights) and pass '
                '--cfg-options model.backbone.init_cfg.checkpoint=DST, or train from scratch with '
                '--cfg-options model.backbone.init_cfg=None.')
        raw = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        if prefix:
            raw = {k[len(prefix):]: v for k, v in raw.get('state_dict', raw).items() if k.startswith(prefix)}
        state = convert_to_ghostdet(raw, keep_last_conv=self.last_conv is not None)
        self.load_state_dict(state, strict=True)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in [self.stem, *self.stages[:self.frozen_stages + 1]]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'GhostNetV3':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def switch_to_deploy(self) -> None:
        """Fuse every re-parameterizable conv in place; the model then equals ``deploy=True``."""
        for module in self.modules():
            if isinstance(module, RepConvBN):
                module.switch_to_deploy()
        self.deploy = True
        self._apply_memory_format()

    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str, *args, **kwargs) -> None:
        """Refuse a checkpoint of the other form (fused vs branched) instead of silently skipping it."""
        keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
        has_fused = any('.fused.' in k for k in keys)
        has_branches = any('.branches.' in k for k in keys)
        if has_fused and not self.deploy:
            raise ValueError(
                'This checkpoint holds a fused (deploy) GhostNetV3, but the model has training branches: '
                'build the backbone with deploy=True (or use the deploy config written beside it).')
        if has_branches and self.deploy:
            raise ValueError(
                'This checkpoint holds an unfused (training) GhostNetV3, but the model is fused '
                '(deploy=True): build it with deploy=False, or fuse the checkpoint first with '
                'tools/reparameterize.py (detectors) or tools/convert_weights.py --fuse (backbones).')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
