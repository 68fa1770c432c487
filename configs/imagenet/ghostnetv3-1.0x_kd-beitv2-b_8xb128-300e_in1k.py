# The GhostNetV3 ImageNet recipe with knowledge distillation: the classifier of
# ghostnetv3-1.0x_8xb128-300e_in1k.py (same data, schedule and label-smoothed CE) plus the soft-target
# CE of a teacher's logits (temperature 1, weight 1, as the authors' train.py). Their default teacher,
# timm's BEiTv2-L, has no mmpretrain checkpoint; this uses mmpretrain's BEiTv2-B (see README.md here).
# To start from the official weights: convert them with
# ghostdet.models.classifiers.convert_classifier_weights and set
# model.student.init_cfg=dict(type='Pretrained', checkpoint=<converted file>).
_base_ = './ghostnetv3-1.0x_8xb128-300e_in1k.py'

model = dict(
    _delete_=True,
    type='ClassifierDistiller',
    student=_base_.model,
    teacher_config='mmpretrain::beitv2/benchmarks/beit-base-p16_8xb64_in1k.py',
    teacher_checkpoint='https://download.openmmlab.com/mmclassification/v0/beit/'
    'beitv2-base_3rdparty_in1k_20221114-73e11905.pth',
    distill_losses=dict(loss_kd=dict(type='SoftTargetCELoss', loss_weight=1.0, temperature=1.0)))
