# RetinaNet with GhostNetV3-1.0x + FPN on COCO 2017 (data/coco/), 12 epochs, batch 16 (8 GPUs x 2).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/ghostnetv3_detection.py']

model = dict(
    data_preprocessor=_base_.ghostnetv3_preprocessor,
    backbone=_base_.ghostnetv3_backbone,
    neck=dict(in_channels=[24, 40, 112, 160]))
optim_wrapper = _base_.ghostnetv3_optim_wrapper
