# The teacher of the shapes KD recipe: the CPU demo detector (RetinaNet-GhostNetV3-1.0x, 64-channel
# FPN/head, 400 iterations of batch 8 from scratch with EMA).
# Train it first: python tools/train.py configs/distill/shapes/retinanet_ghostnetv3-1.0x_shapes_teacher.py
# (or let tools/kd_experiment.py do everything).
_base_ = '../../demo/retinanet_ghostnetv3-lite_shapes.py'
