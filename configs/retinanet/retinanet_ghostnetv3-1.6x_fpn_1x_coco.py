# RetinaNet with GhostNetV3-1.6x + FPN on COCO: only the width (and so the FPN inputs) changes.
# FPN inputs = GhostNetV3.out_channels_for(1.6) (tests/test_configs.py checks every config).
_base_ = '../retinanet_ghostnetv3_coco.py'
model = dict(
    backbone=dict(widen_factor=1.6, init_cfg=dict(checkpoint='checkpoints/ghostnetv3-1.6x_in1k.pth')),
    neck=dict(in_channels=[40, 64, 180, 256]))
