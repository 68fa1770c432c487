# RetinaNet-GhostNetV3-1.0x (configs/retinanet/retinanet_ghostnetv3-1.0x_fpn_1x_coco.py) distilled from
# the model-zoo RetinaNet-R50. Both FPNs have 256 channels at strides 8-128 and both heads predict
# 9 anchors x 80 classes per location, so: PKD on the five FPN levels (no adapters) plus KD of the
# classification maps. The student's focal and L1 losses stay. Distillation warms up over the first
# epoch and stops for the last one (as mmyolo's RTMDet KD), so the student ends on its own
# losses. Weights: PKD 6 as calibrated on the shapes set; the logit weight is not tuned on COCO.
_base_ = '../retinanet/retinanet_ghostnetv3-1.0x_fpn_1x_coco.py'

model = dict(
    _delete_=True,
    type='SingleStageDistiller',
    student=_base_.model,
    teacher_config='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r50_fpn_1x_coco/'
    'retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth',
    distill_losses=dict(
        loss_pkd=dict(type='PKDFeatureLoss', loss_weight=6.0),
        loss_logit_kd=dict(type='DenseLogitKDLoss', loss_weight=1.0, temperature=1.0)))
custom_hooks = _base_.custom_hooks + [dict(type='DistillScheduleHook', warmup=1, stop=11, by_epoch=True)]
