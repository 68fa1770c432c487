# The shapes KD recipe: the student of retinanet_ghostnetv3-0.5x_shapes.py (same schedule, data and
# seed) learning from the 1.0x teacher of retinanet_ghostnetv3-1.0x_shapes_teacher.py, trained first.
# Same FPN channels and head layout, so: PKD on the five FPN levels plus KD of the classification maps;
# PKD weight 3 closed more of the teacher-student gap than 6 (measured: README.md in this folder).
# tools/kd_experiment.py passes the teacher checkpoint it trained; by hand, train the teacher with
# tools/train.py (default work dir).
_base_ = './retinanet_ghostnetv3-0.5x_shapes.py'

model = dict(
    _delete_=True,
    type='SingleStageDistiller',
    student=_base_.model,
    teacher_config='{{fileDirname}}/retinanet_ghostnetv3-1.0x_shapes_teacher.py',
    teacher_checkpoint='work_dirs/retinanet_ghostnetv3-1.0x_shapes_teacher/iter_400.pth',
    distill_losses=dict(
        loss_pkd=dict(type='PKDFeatureLoss', loss_weight=3.0),
        loss_logit_kd=dict(type='DenseLogitKDLoss', loss_weight=1.0, temperature=1.0)))
