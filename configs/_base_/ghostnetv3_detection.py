# Pieces every GhostNetV3 detector shares, as variables that detector configs place into their mmdet::
# base (mmengine forbids two bases defining the same key, e.g. `model`).
# The empty _base_ makes mmengine read this file as an old-style config although it imports; the class
# is deleted at the end, because a class left in a config breaks its dump (cfg.pretty_text).
_base_ = []
from ghostdet.models import GhostNetV3  # noqa: E402

custom_imports = dict(imports=['ghostdet'], allow_failed_imports=False)

# GhostNetV3 was trained on RGB images normalised with ImageNet statistics.
ghostnetv3_preprocessor = dict(
    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)

# ImageNet weights per width. Only 1.0x has an official release; the other widths' configs name a local file
# (train configs/imagenet/ at that width, or convert other weights with tools/convert_weights.py), and a
# missing file stops training with that advice rather than training from random weights.
ghostnetv3_imagenet = {
    1.0: 'https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/GhostNetV3/'
    'ghostnetv3-1.0.pth.tar'
}

ghostnetv3_backbone = dict(
    _delete_=True,
    type='GhostNetV3',
    widen_factor=1.0,
    out_indices=(1, 2, 3, 4),  # strides 4/8/16/32 for FPN start_level=1
    # A compact net's BN statistics must adapt to detection: train every BN and freeze nothing. Its
    # hundreds of narrow BNs see 2 images per GPU, too few for stable statistics: on several GPUs set
    # sync_bn = 'torch' (or --cfg-options sync_bn=torch) so each BN normalises over every GPU's images.
    frozen_stages=-1,
    norm_eval=False,
    # The authors' ImageNet release (EMA weights), downloaded and cached on first use and converted on
    # load; offline: init_cfg.checkpoint=a local copy or a mirror. From scratch: model.backbone.init_cfg=None
    init_cfg=dict(type='Pretrained', checkpoint=ghostnetv3_imagenet[1.0]))

# What changes with the backbone's width, per published width: the width, its ImageNet weights and the
# neck inputs that follow from them. A width config merges its entry into the 1.0x detector's model:
# model = _base_.ghostnetv3_widths['0.5x']. FPN detectors take the stage ends at strides 4/8/16/32
# (RetinaNet/FCOS start at stride 8 with start_level=1); RTMDet's PAFPN takes strides 8/16/32 only.


def _width_entry(width: float, out_indices: tuple) -> dict:
    checkpoint = ghostnetv3_imagenet.get(width, f'checkpoints/ghostnetv3-{width}x_in1k.pth')
    return dict(backbone=dict(widen_factor=width, out_indices=out_indices, init_cfg=dict(checkpoint=checkpoint)),
                neck=dict(in_channels=GhostNetV3.out_channels_for(width, out_indices)))


ghostnetv3_widths = {f'{width}x': _width_entry(width, (1, 2, 3, 4)) for width in (0.5, 1.0, 1.3, 1.6)}
_strides_8_to_32 = (2, 3, 4)
ghostnetv3_backbone_s8 = dict(ghostnetv3_backbone, out_indices=_strides_8_to_32)
ghostnetv3_widths_s8 = {f'{width}x': _width_entry(width, _strides_8_to_32) for width in (0.5, 1.0, 1.3, 1.6)}

# SGD as mmdet's ResNet detectors, but: weight decay as in GhostNet/MobileNet ImageNet training, none on
# BN and biases (the many per-branch BN scales of the re-param blocks must not shrink to zero), and
# gradient clipping because the summed branches make the first steps large.
ghostnetv3_optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=4e-5),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))

# A fused, deploy-ready checkpoint (and deploy config) beside every checkpoint saved. A variable, not
# custom_hooks itself, so that detectors whose mmdet base has hooks (RTMDet) can use this file too.
ghostnetv3_hooks = [dict(type='ReparamCheckpointHook')]
del GhostNetV3, _width_entry, _strides_8_to_32
