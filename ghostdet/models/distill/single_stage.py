"""Distillation of single-stage detectors with an FPN (RetinaNet, FCOS, ATSS, GFL, ...)."""
from typing import Any, Optional

import torch.nn as nn
from torch import Tensor

from mmdet.models.detectors import SingleStageDetector
from mmdet.registry import MODELS
from .base import DistillerBase, Outputs
from .layout import DenseHeadLayout, LayoutMismatchError


@MODELS.register_module()
class SingleStageDistiller(DistillerBase):
    """A single-stage student detector learning from a frozen single-stage teacher.

    The KD losses compare the FPN levels the two dense heads consume (``feats``, e.g.
    ``PKDFeatureLoss``) and the heads' classification maps (``cls_scores``, ``DenseLogitKDLoss``);
    the student's own detection losses stay. Teacher and student may differ in detector type,
    backbone, FPN channels and input normalisation (the teacher gets the batch re-normalised as its
    own data preprocessor would).

    Example::

        model = dict(
            type='SingleStageDistiller',
            student=dict(type='RetinaNet', ...),  # an ordinary detector config: what is deployed
            teacher_config='mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
            teacher_checkpoint='https://download.openmmlab.com/...pth',
            distill_losses=dict(loss_pkd=dict(type='PKDFeatureLoss', loss_weight=6.0)))

    Args:
        student: config of the student detector.
        teacher_config: the teacher's config file (``mmdet::`` paths allowed), full config or
            model config.
        teacher_checkpoint: path or URL of the teacher's weights, loaded strictly.
        distill_losses: loss name (``loss_*``, the logged name) -> loss config (``None``: off).
        data_preprocessor: the student's, when its config has none.
        init_cfg: initialisation of the distiller itself (the student keeps its own).
    """

    registry = MODELS
    sources = ('feats', 'cls_scores')

    def _loss_args(self) -> dict:
        for role, model in (('student', self.student), ('teacher', self.teacher)):
            if not isinstance(model, SingleStageDetector):
                raise LayoutMismatchError(f'SingleStageDistiller needs single-stage detectors; the {role} is '
                                          f'a {type(model).__name__}')
        return dict(student=DenseHeadLayout.of(self.student), teacher=DenseHeadLayout.of(self.teacher))

    def student_tap(self) -> nn.Module:
        return self.student.bbox_head

    def student_outputs(self, args: tuple, output: Any) -> Outputs:
        return dict(feats=args[0], cls_scores=output[0])

    def teacher_outputs(self, inputs: Tensor, needed: set) -> Outputs:
        feats = self.teacher.extract_feat(inputs)
        cls_scores = self.teacher.bbox_head(feats)[0] if 'cls_scores' in needed else None
        return dict(feats=feats, cls_scores=cls_scores)

    def extract_feat(self, inputs: Tensor) -> Any:
        return self.student.extract_feat(inputs)

    def _forward(self, inputs: Tensor, data_samples: Optional[list] = None) -> Any:
        return self.student._forward(inputs, data_samples)
