# The product's name for retinanet/retinanet_ghostnetv3-1.0x_fpn_1x_coco.py (same config, kept as the entry
# point that the README's commands use); its fused form: retinanet/deploy/.
_base_ = './retinanet/retinanet_ghostnetv3-1.0x_fpn_1x_coco.py'
