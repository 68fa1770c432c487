# YOLOX with GhostNetV3-1.0x on COCO 2017 (data/coco/): mmdet's YOLOX-tiny recipe unchanged (YOLOXPAFPN neck
# and decoupled head of 96 channels, SimOTA, mosaic + random affine with a last-15-epoch switch off, multi-scale
# batches 320-640, SGD with Nesterov, EMA, 300 epochs of batch 64) on GhostNetV3's stage ends at strides
# 8/16/32 (40/112/160 channels) instead of CSPDarknet-tiny's (96/192/384). The detector that won the shapes
# comparison's recipe (docs/benchmarks.md), on GhostNetV3. GhostNetV3's ImageNet weights need its input
# normalisation (YOLOX-tiny feeds raw BGR pixels).
_base_ = ['mmdet::yolox/yolox_tiny_8xb8-300e_coco.py', '../_base_/ghostnetv3_detection.py']

model = dict(data_preprocessor=_base_.ghostnetv3_preprocessor, backbone=_base_.ghostnetv3_backbone_s8,
             neck=_base_.ghostnetv3_widths_s8['1.0x'].neck)
custom_hooks = _base_.custom_hooks + _base_.ghostnetv3_hooks
