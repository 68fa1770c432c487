# FCOS with GhostNetV3-1.3x + FPN on COCO: only the width (and so the ImageNet weights and the FPN
# inputs, see ../_base_/ghostnetv3_detection.py) changes.
_base_ = './fcos_ghostnetv3-1.0x_fpn_gn-head_1x_coco.py'
model = _base_.ghostnetv3_widths['1.3x']
