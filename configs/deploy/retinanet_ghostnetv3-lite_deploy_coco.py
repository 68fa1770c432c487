# Fused (deploy) form of ../retinanet/retinanet_ghostnetv3-lite_fpn_1x_coco.py.
_base_ = '../retinanet/retinanet_ghostnetv3-lite_fpn_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
custom_hooks = []
