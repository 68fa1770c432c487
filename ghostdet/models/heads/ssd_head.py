"""SSDHead that predicts under mmdet 3.3.0.

mmdet 3.3.0's ``BaseDenseHead._predict_by_feat_single`` reads ``self.loss_cls``, which ``SSDHead`` never
sets (it skips ``AnchorHead.__init__``), so every SSD/SSDLite validation, test and inference fails with
``AttributeError: 'SSDHead' object has no attribute 'loss_cls'`` (open-mmlab/mmdetection#11305, #11780;
fix proposed in #11524). Same weights and outputs as ``SSDHead``.
"""
from typing import Any

from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS


@MODELS.register_module()
class PredictableSSDHead(SSDHead):
    """``SSDHead`` whose softmax classifier has no loss module with custom class channels."""
    loss_cls = None  # what the prediction code asks for; SSD computes its loss without a loss module


def with_predictable_ssd_head(model_cfg: Any) -> Any:
    """``model_cfg`` with an ``SSDHead`` bbox head swapped for :class:`PredictableSSDHead` (in place)."""
    head = model_cfg.get('bbox_head')
    if head is not None and head.get('type') in ('SSDHead', 'mmdet.SSDHead'):
        head['type'] = 'PredictableSSDHead'
    return model_cfg
