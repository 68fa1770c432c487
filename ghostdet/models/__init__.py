"""Registers ghostdet's models in MMDetection's (and, when installed, MMPretrain's) MODELS registry."""
from mmdet.registry import MODELS

from . import distill  # noqa: F401  (SingleStageDistiller, KD losses)
from .backbones import GhostNetV3
from .heads import LiteFCOSHead, LiteRetinaHead
from .layers import RepConvBN

MODELS.register_module(module=GhostNetV3)

try:  # usable as type='GhostNetV3' from mmpretrain configs too
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
except ImportError:  # mmpretrain is optional for detection
    PRETRAIN_MODELS = None
else:
    PRETRAIN_MODELS.register_module(module=GhostNetV3)
    from . import classifiers  # noqa: F401  (GhostNetV3ClsHead, ClassifierDistiller)

__all__ = ['GhostNetV3', 'LiteFCOSHead', 'LiteRetinaHead', 'RepConvBN']
