"""Randomized GhostNetV3 parts for tests: fresh BNs are identities and fresh weights small, which would
hide errors in fusion, fast paths and gradients."""
import torch
import torch.nn as nn

from ..exactness import randomize_bn
from ..models.backbones.ghostnetv3 import GhostModuleV3
from ..models.layers import RepConvBN

RELU = dict(type='ReLU', inplace=True)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to ``a``'s largest magnitude."""
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def random_depthwise_block(channels: int, kernel: int, stride: int, scale: bool, identity: bool) -> RepConvBN:
    """A train-mode depthwise RepConvBN (ReLU) with unit-normal weights and random BN statistics."""
    block = RepConvBN(channels, channels, kernel, stride, groups=channels, use_scale=scale,
                      use_identity=identity, act_cfg=RELU)
    for param in block.parameters():
        nn.init.normal_(param)
    return randomize_bn(block).train()


def random_ghost_module(in_channels: int, out_channels: int, relu: bool, dfc: bool,
                        deploy: bool) -> GhostModuleV3:
    """An eval-mode, channels-last ghost module with wide random weights, fused when ``deploy``."""
    module = randomize_bn(GhostModuleV3(in_channels, out_channels, act_cfg=RELU if relu else None,
                                        use_dfc=dfc)).eval()
    for param in module.parameters():
        nn.init.normal_(param, std=0.5)
    if deploy:
        for block in (module.primary, module.cheap):
            block.switch_to_deploy()
    return module.to(memory_format=torch.channels_last)
