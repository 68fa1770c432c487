# FCOS with GhostNetV3-0.5x + FPN on COCO: only the width (and so the FPN inputs) changes.
# FPN inputs = GhostNetV3.out_channels_for(0.5) (tests/test_configs.py checks every config).
_base_ = '../fcos_ghostnetv3_coco.py'
model = dict(
    backbone=dict(widen_factor=0.5, init_cfg=dict(checkpoint='checkpoints/ghostnetv3-0.5x_in1k.pth')),
    neck=dict(in_channels=[12, 20, 56, 80]))
