# The CPU demo: RetinaNet-GhostNetV3-1.0x with a slim 64-channel FPN/head, trained from scratch on the
# synthetic shapes dataset (256x256) for 300 iterations of batch 8 (about 12 minutes on 2 cores).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/default_runtime.py',
    '../_base_/datasets/shapes_detection.py', '../_base_/ghostnetv3_detection.py'
]
# From scratch, a norm-free FPN/head learns slowly (loss 1.43 after 120 iterations); GroupNorm in both,
# as in "Rethinking ImageNet Pre-training", gets there in about half the iterations (0.96).
group_norm = dict(type='GN', num_groups=16, requires_grad=True)
model = dict(
    data_preprocessor=_base_.ghostnetv3_preprocessor,
    backbone=dict(_base_.ghostnetv3_backbone, init_cfg=None),  # from scratch: no ImageNet weights
    neck=dict(in_channels=[24, 40, 112, 160], out_channels=64, norm_cfg=group_norm),
    # Shapes are 20-100 px: anchors from 16 px at stride 8 (COCO's start at 32 px) so that small
    # objects get positive anchors at IoU 0.5.
    bbox_head=dict(num_classes=3, in_channels=64, feat_channels=64, stacked_convs=2, norm_cfg=group_norm,
                   anchor_generator=dict(octave_base_scale=2)))

max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# AdamW trains a from-scratch compact detector faster than SGD on a short CPU budget.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min=2e-5)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=2,
                    save_best='coco/bbox_mAP'))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
