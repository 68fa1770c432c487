# FCOS with GhostNetV3-1.3x + FPN on COCO: only the width (and so the FPN inputs) changes.
# FPN inputs = GhostNetV3.out_channels_for(1.3) (tests/test_configs.py checks every config).
_base_ = '../fcos_ghostnetv3_coco.py'
model = dict(
    backbone=dict(widen_factor=1.3, init_cfg=dict(checkpoint='checkpoints/ghostnetv3-1.3x_in1k.pth')),
    neck=dict(in_channels=[32, 52, 144, 208]))
