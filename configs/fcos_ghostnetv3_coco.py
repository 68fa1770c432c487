# FCOS (GN head) with GhostNetV3-1.0x + FPN on COCO 2017 (data/coco/), 12 epochs, batch 16 (8 GPUs x 2).
# The stock FCOS config expects a caffe-style ResNet (BGR, no std): the preprocessor is reset to ours.
_base_ = ['mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', './_base_/ghostnetv3_detection.py']

model = dict(
    data_preprocessor=_base_.ghostnetv3_preprocessor,
    backbone=_base_.ghostnetv3_backbone,
    neck=dict(in_channels=[24, 40, 112, 160]))
# Merged into the FCOS base, which keeps its 2x bias learning rate.
optim_wrapper = _base_.ghostnetv3_optim_wrapper
