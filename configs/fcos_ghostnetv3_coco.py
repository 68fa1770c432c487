# The product's name for fcos/fcos_ghostnetv3-1.0x_fpn_gn-head_1x_coco.py (same config, kept as the entry
# point that the README's commands use); its fused form: fcos/deploy/.
_base_ = './fcos/fcos_ghostnetv3-1.0x_fpn_gn-head_1x_coco.py'
