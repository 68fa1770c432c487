"""Light RetinaNet and FCOS heads for compact deployment.

The stock heads cost 40-60 GMACs at 640x640, mostly in their 3x3 convs on 256 channels and, for
RetinaNet, the 3x3 classifier producing anchors x classes maps. These heads keep the stock assigners,
losses and post-processing (so accuracy numbers stay comparable) and change only the convolutions:
depthwise-separable stacked convs (shared over FPN levels as in the stock heads) and a configurable
predictor kernel (1x1 by default: the last separable conv already sees a 3x3 neighbourhood).
"""
from typing import Optional

import torch.nn as nn
from mmcv.cnn import DepthwiseSeparableConvModule
from mmcv.cnn.bricks import Scale
from mmdet.models.dense_heads import FCOSHead, RetinaHead
from mmdet.registry import MODELS


def separable_stack(in_channels: int, feat_channels: int, num_convs: int,
                    norm_cfg: Optional[dict]) -> nn.ModuleList:
    """``num_convs`` depthwise-separable 3x3 conv-norm-ReLU layers."""
    return nn.ModuleList(
        DepthwiseSeparableConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3,
                                     padding=1, norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'))
        for i in range(num_convs))


def predictor(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class SeparableStackedConvs:
    """What both light heads add to their stock head: the ``pred_kernel_size`` argument and depthwise-separable
    stacked convs for the classification and regression branches."""

    def __init__(self, *args, pred_kernel_size: int = 1, **kwargs) -> None:
        self.pred_kernel_size = pred_kernel_size
        super().__init__(*args, **kwargs)

    def _init_stacked_convs(self) -> None:
        self.cls_convs = separable_stack(self.in_channels, self.feat_channels, self.stacked_convs,
                                         self.norm_cfg)
        self.reg_convs = separable_stack(self.in_channels, self.feat_channels, self.stacked_convs,
                                         self.norm_cfg)


@MODELS.register_module()
class LiteRetinaHead(SeparableStackedConvs, RetinaHead):
    """RetinaHead with depthwise-separable stacked convs and a ``pred_kernel_size`` predictor."""

    def _init_layers(self) -> None:
        self.relu = nn.ReLU(inplace=True)
        self._init_stacked_convs()
        channels = self.feat_channels if self.stacked_convs else self.in_channels
        self.retina_cls = predictor(channels, self.num_base_priors * self.cls_out_channels,
                                    self.pred_kernel_size)
        self.retina_reg = predictor(channels, self.num_base_priors * self.bbox_coder.encode_size,
                                    self.pred_kernel_size)


@MODELS.register_module()
class LiteFCOSHead(SeparableStackedConvs, FCOSHead):
    """FCOSHead with depthwise-separable stacked convs and a ``pred_kernel_size`` predictor."""

    def _init_layers(self) -> None:
        if self.dcn_on_last_conv or self.cls_predictor_cfg is not None:
            raise ValueError('LiteFCOSHead supports neither dcn_on_last_conv nor cls_predictor_cfg')
        self._init_stacked_convs()
        self.conv_cls = predictor(self.feat_channels, self.cls_out_channels, self.pred_kernel_size)
        self.conv_reg = predictor(self.feat_channels, 4, self.pred_kernel_size)
        self.conv_centerness = predictor(self.feat_channels, 1, self.pred_kernel_size)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])
