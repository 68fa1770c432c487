# Fused (deploy) form of ../fcos/fcos_ghostnetv3-lite_fpn_1x_coco.py.
_base_ = '../fcos/fcos_ghostnetv3-lite_fpn_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
custom_hooks = []
