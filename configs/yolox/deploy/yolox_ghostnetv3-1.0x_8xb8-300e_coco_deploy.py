# The fused (deploy) form of its _base_: load the *_deploy.pth checkpoints saved during its training.
_base_ = '../yolox_ghostnetv3-1.0x_8xb8-300e_coco.py'
model = dict(backbone=dict(deploy=True, init_cfg=None))
custom_hooks = []
