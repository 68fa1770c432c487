# The CPU demo: RetinaNet-GhostNetV3-1.0x with a slim 64-channel FPN/head, trained from scratch on the
# synthetic shapes dataset (256x256) for 400 iterations of batch 8, evaluated with EMA weights. What it
# measured (mAP per seed, time, size) and how each choice below was measured: README.md in this folder.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/default_runtime.py',
    '../_base_/datasets/shapes_detection.py', '../_base_/ghostnetv3_detection.py'
]
# From scratch, a norm-free FPN/head learns slowly; GroupNorm in both, as in "Rethinking ImageNet
# Pre-training", learns much faster.
group_norm = dict(type='GN', num_groups=16, requires_grad=True)
model = dict(
    data_preprocessor=_base_.ghostnetv3_preprocessor,
    # From scratch (no ImageNet weights); every bottleneck starts as its shortcut, as mmdet's ResNet does,
    # which learns faster in the first iterations.
    backbone=dict(_base_.ghostnetv3_backbone, init_cfg=None, zero_init_residual=True),
    neck=dict(_base_.ghostnetv3_widths['1.0x'].neck, out_channels=64, norm_cfg=group_norm),
    # Shapes are 20-80 px: anchors from 16 px at stride 8 (COCO's start at 32 px) so that small
    # objects get positive anchors at IoU 0.5.
    bbox_head=dict(num_classes=3, in_channels=64, feat_channels=64, stacked_convs=2, norm_cfg=group_norm,
                   anchor_generator=dict(octave_base_scale=2)))

max_iters = 400
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# AdamW trains a from-scratch compact detector faster than SGD on a short CPU budget; with the zero-init
# bottlenecks it takes a high rate (the higher the better, up to this one). The fused kernel updates every
# tensor in one call instead of a per-tensor loop.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=8e-3, weight_decay=0.05, fused=True),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min=8e-5)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=2,
                    save_best='coco/bbox_mAP'))
# Evaluated (and fused) with an exponential moving average of the weights and BN statistics, as RTMDet
# trains: a from-scratch run of a few hundred steps ends on noisy weights, and without EMA which of them a
# seed landed on decided much of its mAP. ExpMomentumEMA starts as a copy of the weights (momentum ~1) and
# settles on averaging about the last 50 steps (momentum 0.02) once training is past its warm-up.
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.02, gamma=50, update_buffers=True,
         priority='ABOVE_NORMAL')
] + _base_.ghostnetv3_hooks
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
