"""GhostNetV3 image classification with knowledge distillation (registered in mmpretrain's MODELS)."""
from .convert import convert_classifier_weights
from .distiller import ClassifierDistiller, SoftTargetCELoss
from .ghostnetv3_head import GhostNetV3ClsHead

__all__ = ['ClassifierDistiller', 'GhostNetV3ClsHead', 'SoftTargetCELoss', 'convert_classifier_weights']
