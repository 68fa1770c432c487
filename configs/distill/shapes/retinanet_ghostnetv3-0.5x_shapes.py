# The student of the shapes KD recipe, trained alone: RetinaNet-GhostNetV3-0.5x with the teacher's
# 64-channel FPN/head, 150 iterations of batch 8 (3 epochs) from scratch. Its distilled twin
# (kd_retinanet_ghostnetv3-0.5x_shapes.py) inherits everything here: same schedule, data and seed.
_base_ = '../../demo/retinanet_ghostnetv3-lite_shapes.py'

# The width and the FPN inputs that follow from it (no ImageNet weights: from scratch, as the teacher).
model = dict(backbone=dict(widen_factor=0.5), neck=_base_.ghostnetv3_widths['0.5x'].neck)

max_iters = 150
train_cfg = dict(max_iters=max_iters, val_interval=50)
# The demo's warm-up and cosine decay, the decay ending at this schedule's last iteration.
param_scheduler = [_base_.param_scheduler[0], dict(_base_.param_scheduler[1], end=max_iters)]
default_hooks = dict(checkpoint=dict(interval=50))
