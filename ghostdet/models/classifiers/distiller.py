"""Knowledge distillation for image classifiers (the GhostNetV3 ImageNet recipe), in mmpretrain."""
from typing import Any

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from torch import Tensor

from ..distill.base import DistillerBase, Outputs


@MODELS.register_module()
class SoftTargetCELoss(nn.Module):
    """Cross-entropy of the student's logits against the teacher's softmax, batch mean, times T^2.

    With ``temperature=1`` this is the authors' ``kd_loss`` (train.py): equal, up to the teacher's
    constant entropy, to KL(teacher || student).
    """

    source = 'logits'

    def __init__(self, loss_weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'SoftTargetCELoss temperature must be positive, got {temperature}')
        self.loss_weight = loss_weight
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(f'SoftTargetCELoss: student logits {tuple(student_logits.shape)} and teacher '
                             f'logits {tuple(teacher_logits.shape)}: both must predict the same classes')
        t = self.temperature
        target = F.softmax(teacher_logits.float() / t, dim=1)
        loss = -(target * F.log_softmax(student_logits.float() / t, dim=1)).sum(1).mean()
        return self.loss_weight * t**2 * loss


@MODELS.register_module()
class ClassifierDistiller(DistillerBase):
    """An image classifier learning from a frozen teacher's logits plus its own (label-smoothed) loss.

    The student is an ordinary mmpretrain classifier config (e.g. ``ImageClassifier`` with GhostNetV3
    and :class:`GhostNetV3ClsHead`); its head's loss is the ground-truth term. The KD losses compare
    ``logits`` (e.g. :class:`SoftTargetCELoss`). The teacher is any mmpretrain classifier
    (``ImageClassifier``: head on its features; others, e.g. ``TimmClassifier``: ``mode='tensor'``),
    fed the batch re-normalised as its own data preprocessor would.

    Args: as :class:`~ghostdet.models.distill.SingleStageDistiller`.
    """

    registry = MODELS
    sources = ('logits', )

    def student_tap(self) -> nn.Module:
        return self.student.head

    def student_outputs(self, args: tuple, output: Any) -> Outputs:
        return dict(logits=output)

    def teacher_outputs(self, inputs: Tensor, needed: set) -> Outputs:
        if isinstance(self.teacher, ImageClassifier):
            return dict(logits=self.teacher.head(self.teacher.extract_feat(inputs)))
        return dict(logits=self.teacher(inputs, mode='tensor'))

    def extract_feat(self, inputs: Tensor, **kwargs) -> Any:
        return self.student.extract_feat(inputs, **kwargs)
