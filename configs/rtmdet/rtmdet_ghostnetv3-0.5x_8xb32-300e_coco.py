# RTMDet with GhostNetV3-0.5x: only the width (and so the ImageNet weights and the neck inputs, see
# ../_base_/ghostnetv3_detection.py) changes.
_base_ = './rtmdet_ghostnetv3-1.0x_8xb32-300e_coco.py'
model = _base_.ghostnetv3_widths_s8['0.5x']
