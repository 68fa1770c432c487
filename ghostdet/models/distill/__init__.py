"""Knowledge distillation for single-stage detectors (registered in mmdet's MODELS)."""
from .base import DistillerBase, recording
from .layout import DenseHeadLayout, LayoutMismatchError, match_levels
from .losses import DenseLogitKDLoss, PKDFeatureLoss
from .single_stage import SingleStageDistiller
from .teacher import FrozenTeacher, Normalization, TeacherError, build_teacher, renormalize

__all__ = [
    'DenseHeadLayout', 'DenseLogitKDLoss', 'DistillerBase', 'FrozenTeacher', 'LayoutMismatchError',
    'Normalization', 'PKDFeatureLoss', 'SingleStageDistiller', 'TeacherError', 'build_teacher',
    'match_levels', 'recording', 'renormalize'
]
