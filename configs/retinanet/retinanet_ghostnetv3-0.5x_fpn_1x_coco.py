# RetinaNet with GhostNetV3-0.5x + FPN on COCO: only the width (and so the ImageNet weights and the FPN
# inputs, see ../_base_/ghostnetv3_detection.py) changes.
_base_ = './retinanet_ghostnetv3-1.0x_fpn_1x_coco.py'
model = _base_.ghostnetv3_widths['0.5x']
