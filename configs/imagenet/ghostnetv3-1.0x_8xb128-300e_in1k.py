# GhostNetV3-1.0x ImageNet-1k classifier (mmpretrain), trained without a teacher: the student of
# ghostnetv3-1.0x_kd-beitv2-b_8xb128-300e_in1k.py. The paper's hyper-parameters are unpublished; these
# are the defaults of the authors' train.py: SGD lr 0.05 (momentum 0.9, weight decay 2e-5, none on BN
# and biases), 3 warm-up epochs from 1e-4, cosine to 1e-5 over 300 epochs, batch 128 per GPU,
# RandomResizedCrop + flip + colour jitter 0.4, no mixup/cutmix, label smoothing 0.1; plus EMA
# (decay 0.9998), with which the released weights were made. Head: the reference's (pool, 1x1 conv to
# 1280, ReLU, linear), on the backbone's final 1x1 conv (out_indices=(5, )).
# Its backbone feeds the detection configs: model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint=<this run's checkpoint>, prefix='backbone.') (prefix='student.backbone.' after KD).
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs32.py', 'mmpretrain::_base_/default_runtime.py']
# Imported below _base_ and deleted at the end: see ../_base_/ghostnetv3_detection.py.
from ghostdet.models import GhostNetV3  # noqa: E402

custom_imports = dict(imports=['ghostdet', 'ghostdet.models.classifiers'], allow_failed_imports=False)

widen_factor = 1.0
model = dict(
    type='ImageClassifier',
    backbone=dict(type='GhostNetV3', widen_factor=widen_factor, out_indices=(5, ), frozen_stages=-1,
                  norm_eval=False),
    neck=None,
    head=dict(
        type='GhostNetV3ClsHead',
        num_classes=1000,
        in_channels=GhostNetV3.out_channels_for(widen_factor, (5, ))[0],
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, num_workers=8, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, num_workers=8)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=2e-5),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
max_epochs = 300
warmup_epochs = 3
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4 / 0.05, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs, end=max_epochs)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)

# EMA first (priority 49), then a fused deploy checkpoint beside every checkpoint.
custom_hooks = [
    dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL'),
    dict(type='ReparamCheckpointHook')
]
del GhostNetV3
