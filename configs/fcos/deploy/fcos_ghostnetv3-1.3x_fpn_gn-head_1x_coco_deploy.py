# The fused (deploy) form of its _base_: load the *_deploy.pth checkpoints saved during its training.
_base_ = '../fcos_ghostnetv3-1.3x_fpn_gn-head_1x_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
custom_hooks = []
