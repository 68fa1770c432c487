"""The classification head of the reference GhostNetV3, in mmpretrain's registry."""
from typing import Optional, Sequence

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from torch import Tensor

HEAD_CHANNELS = 1280  # not scaled with the width in the reference


@MODELS.register_module()
class GhostNetV3ClsHead(ClsHead):
    """Global average pool -> 1x1 conv (with bias) to ``mid_channels`` -> ReLU -> [dropout] -> linear.

    Fed by ``GhostNetV3(out_indices=(5, ))`` (the final 1x1 conv, ``960 * widen_factor`` channels)
    with no neck. The layer names are the reference's (``conv_head``, ``classifier``), so official
    weights load by prefix (see :func:`convert_classifier_weights`). The reference has no dropout
    (commented out); timm applies 0.2. Initialisation: PyTorch's defaults, as the reference.

    Args:
        num_classes: number of classes.
        in_channels: channels of the backbone's last output.
        mid_channels: channels of the 1x1 conv.
        dropout: dropout probability before the classifier.
    """

    def __init__(self, num_classes: int, in_channels: int, mid_channels: int = HEAD_CHANNELS,
                 dropout: float = 0., init_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        self.num_classes = num_classes
        self.conv_head = nn.Conv2d(in_channels, mid_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(mid_channels, num_classes)

    def pre_logits(self, feats: Sequence[Tensor]) -> Tensor:
        x = F.adaptive_avg_pool2d(feats[-1], 1)
        return self.act(self.conv_head(x)).flatten(1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return self.classifier(self.dropout(self.pre_logits(feats)))
