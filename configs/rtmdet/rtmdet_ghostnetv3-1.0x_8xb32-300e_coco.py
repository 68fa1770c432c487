# RTMDet with GhostNetV3-1.0x on COCO 2017 (data/coco/): mmdet's RTMDet-tiny recipe unchanged (CSPNeXtPAFPN
# neck and shared separable-BN head of 96 channels, dynamic soft-label assigner, mosaic + MixUp with a
# last-20-epoch switch to plain resizing, AdamW, EMA, 300 epochs of batch 256) on GhostNetV3's stage ends at
# strides 8/16/32 (40/112/160 channels) instead of CSPNeXt-tiny's (96/192/384).
_base_ = ['mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', '../_base_/ghostnetv3_detection.py']

model = dict(data_preprocessor=_base_.ghostnetv3_preprocessor, backbone=_base_.ghostnetv3_backbone_s8,
             neck=_base_.ghostnetv3_widths_s8['1.0x'].neck)
custom_hooks = _base_.custom_hooks + _base_.ghostnetv3_hooks
