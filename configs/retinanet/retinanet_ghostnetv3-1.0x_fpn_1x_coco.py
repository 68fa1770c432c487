# RetinaNet with GhostNetV3-1.0x + FPN on COCO 2017 (data/coco/), 12 epochs, batch 16 (8 GPUs x 2).
# The product's entry point configs/retinanet_ghostnetv3_coco.py is this config under another name; the
# other widths and the lite variant inherit it.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '../_base_/ghostnetv3_detection.py']

model = dict(data_preprocessor=_base_.ghostnetv3_preprocessor, backbone=_base_.ghostnetv3_backbone,
             neck=_base_.ghostnetv3_widths['1.0x'].neck)
optim_wrapper = _base_.ghostnetv3_optim_wrapper
custom_hooks = _base_.ghostnetv3_hooks
