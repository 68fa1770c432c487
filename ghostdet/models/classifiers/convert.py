"""Official (authors' or timm) GhostNetV3 ImageNet weights -> ghostdet's mmpretrain classifier."""
from typing import Dict

from torch import Tensor

from ...weights import convert_to_ghostdet, extract_state_dict

HEAD_LAYERS = ('conv_head', 'classifier')  # the reference's names, kept by GhostNetV3ClsHead


def convert_classifier_weights(checkpoint: dict, prefer_ema: bool = True) -> Dict[str, Tensor]:
    """State dict of ``ImageClassifier(GhostNetV3(out_indices=(5, )), GhostNetV3ClsHead)``:
    ``backbone.*`` as :func:`ghostdet.weights.convert_to_ghostdet` maps it, ``head.conv_head.*`` and
    ``head.classifier.*`` unchanged. Load it with ``init_cfg=dict(type='Pretrained', checkpoint=...)``
    on the classifier (``model.student`` in a distillation config)."""
    state = extract_state_dict(checkpoint, prefer_ema)
    head = {f'head.{k}': v for k, v in state.items() if k.split('.')[0] in HEAD_LAYERS}
    if not head:
        raise ValueError(f'No {"/".join(HEAD_LAYERS)} weights: not a GhostNetV3 classification checkpoint')
    backbone = {f'backbone.{k}': v for k, v in convert_to_ghostdet(state).items()}
    return {**backbone, **head}
