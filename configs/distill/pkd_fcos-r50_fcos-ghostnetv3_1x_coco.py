# FCOS-GhostNetV3-1.0x (configs/fcos/fcos_ghostnetv3-1.0x_fpn_gn-head_1x_coco.py) distilled from the
# model-zoo FCOS-R50 with centre sampling, normalised boxes, centreness on the regression branch and GIoU.
# The teacher is caffe-style (BGR, no std), the student RGB with ImageNet statistics: the distiller
# re-normalises each batch for the teacher. Both FPNs have 256 channels at strides 8-128 and both heads
# predict 1 point x 80 classes per location: PKD on the five FPN levels plus KD of the classification
# maps, on top of the student's own losses; warm-up over the first epoch, no distillation in the last.
_base_ = '../fcos/fcos_ghostnetv3-1.0x_fpn_gn-head_1x_coco.py'

model = dict(
    _delete_=True,
    type='SingleStageDistiller',
    student=_base_.model,
    teacher_config='mmdet::fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py',
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/fcos/'
    'fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco/'
    'fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco-0a0d75a8.pth',
    distill_losses=dict(
        loss_pkd=dict(type='PKDFeatureLoss', loss_weight=6.0),
        loss_logit_kd=dict(type='DenseLogitKDLoss', loss_weight=1.0, temperature=1.0)))
custom_hooks = _base_.custom_hooks + [dict(type='DistillScheduleHook', warmup=1, stop=11, by_epoch=True)]
