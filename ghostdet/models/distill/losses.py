"""Detection distillation losses: FPN features (PKD) and dense classification logits.

Both are built by :class:`SingleStageDistiller` with the student's and teacher's
:class:`DenseHeadLayout`, so mismatches are found when the model is built, not at the first step.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from .layout import DenseHeadLayout, LayoutMismatchError, match_levels


def standardize(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """(N, C, H, W) -> (C, N*H*W), every channel to zero mean and unit std over batch and space, in float32
    (under AMP the features are half precision, whose sums over a COCO-size map lose most digits)."""
    flat = feat.float().transpose(0, 1).reshape(feat.shape[1], -1)
    return (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + eps)


@MODELS.register_module()
class PKDFeatureLoss(nn.Module):
    """PKD (Cao et al., NeurIPS 2022; mmrazor ``PKDLoss``): MSE/2 between per-channel standardised
    student and teacher FPN features, summed over the levels of equal stride.

    Standardising makes the loss indifferent to the teacher's feature scale, so detectors of another
    type (FCOS teacher, RetinaNet student) or backbone compare directly. Where the channel counts
    differ, a learnable 1x1 conv per level maps the student's features to the teacher's channels
    (trained with the student, saved in the training checkpoint, not in the deploy one).

    Args:
        student, teacher: the heads' layouts (given by the distiller).
        loss_weight: weight of the summed loss.
        strides: distil only the FPN levels of these strides (default: every student level).
    """

    source = 'feats'

    def __init__(self, student: DenseHeadLayout, teacher: DenseHeadLayout, loss_weight: float = 1.0,
                 strides: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.pairs = match_levels(student, teacher, strides)
        self.adapters = nn.ModuleList(
            nn.Conv2d(student.channels, teacher.channels, 1)
            for _ in self.pairs) if student.channels != teacher.channels else None

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        loss = student_feats[0].new_zeros(())
        for k, (i, j) in enumerate(self.pairs):
            student, teacher = student_feats[i], teacher_feats[j]
            if self.adapters is not None:
                student = self.adapters[k](student)
            if student.shape[2:] != teacher.shape[2:]:  # e.g. a teacher padded to a larger divisor
                student = F.interpolate(student, teacher.shape[2:], mode='bilinear', align_corners=False)
            loss = loss + F.mse_loss(standardize(student), standardize(teacher)) / 2
        return self.loss_weight * loss


@MODELS.register_module()
class DenseLogitKDLoss(nn.Module):
    """Hinton KD of the dense classification outputs, for heads of the same layout (priors per
    location, classes, strides): KL(teacher || student) per prior at ``temperature`` (sigmoid heads:
    one Bernoulli per class; softmax heads: one categorical), times T^2.

    Dense heads see background almost everywhere; a plain mean over priors would be dominated by easy
    background that the student's focal loss already handles. The mean is therefore weighted by the
    teacher's foreground confidence (its highest class probability; softmax: 1 - background).

    Args:
        student, teacher: the heads' layouts (given by the distiller).
        loss_weight: weight of the loss.
        temperature: softens both distributions (1: the teacher's own probabilities).
    """

    source = 'cls_scores'

    def __init__(self, student: DenseHeadLayout, teacher: DenseHeadLayout, loss_weight: float = 1.0,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'DenseLogitKDLoss temperature must be positive, got {temperature}')
        if student.cls_channels is None or (student.strides, student.priors, student.cls_channels,
                                            student.sigmoid) != (teacher.strides, teacher.priors,
                                                                 teacher.cls_channels, teacher.sigmoid):
            raise LayoutMismatchError(
                'DenseLogitKDLoss needs teacher and student heads of the same layout:\n'
                f'  student {student.describe_head()}\n  teacher {teacher.describe_head()}\n'
                'Distil the FPN features only (PKDFeatureLoss), or use a teacher of the same head type.')
        self.loss_weight = loss_weight
        self.temperature = temperature
        self.cls_channels = student.cls_channels
        self.sigmoid = student.sigmoid

    def _flatten(self, scores: Sequence[Tensor]) -> Tensor:
        """Per level (N, priors * C, H, W) -> (all priors, C), as mmdet's heads lay them out."""
        return torch.cat([s.permute(0, 2, 3, 1).reshape(-1, self.cls_channels) for s in scores])

    def forward(self, student_scores: Sequence[Tensor], teacher_scores: Sequence[Tensor]) -> Tensor:
        student, teacher = self._flatten(student_scores).float(), self._flatten(teacher_scores).float()
        t = self.temperature
        if self.sigmoid:
            target = torch.sigmoid(teacher / t)
            kl = (F.binary_cross_entropy_with_logits(student / t, target, reduction='none') -
                  F.binary_cross_entropy_with_logits(teacher / t, target, reduction='none')).sum(1)
            foreground = torch.sigmoid(teacher).max(1).values
        else:
            kl = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                          reduction='none').sum(1)
            foreground = 1 - F.softmax(teacher, 1)[:, -1]  # mmdet: background is the last class
        loss = (foreground * kl).sum() / foreground.sum().clamp(min=1e-6)
        return self.loss_weight * t**2 * loss
