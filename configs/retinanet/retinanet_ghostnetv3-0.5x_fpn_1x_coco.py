# RetinaNet with GhostNetV3-0.5x + FPN on COCO: only the width (and so the FPN inputs) changes.
_base_ = '../retinanet_ghostnetv3_coco.py'
from ghostdet.models.backbones.ghostnetv3 import GhostNetV3 as _GhostNetV3  # noqa: E402
model = dict(
    backbone=dict(widen_factor=0.5, init_cfg=dict(checkpoint='checkpoints/ghostnetv3-0.5x_in1k.pth')),
    neck=dict(in_channels=_GhostNetV3.out_channels_for(0.5)))
