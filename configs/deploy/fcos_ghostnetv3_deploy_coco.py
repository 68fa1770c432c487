# Fused (deploy) form of ../fcos_ghostnetv3_coco.py: load *_deploy.pth checkpoints into it.
_base_ = '../fcos_ghostnetv3_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
custom_hooks = []
