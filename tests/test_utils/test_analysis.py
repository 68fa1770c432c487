"""ghostdet.utils.analysis: the one parameter and MAC count, on a real backbone and a real detector."""
from pathlib import Path

import pytest
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ghostdet.deploy import fuse_model
from ghostdet.models import GhostNetV3
from ghostdet.utils.analysis import complexity_by_part, count_params_and_macs

SIZE = (64, 96)
CONFIG = Path(__file__).parents[2] / 'configs' / 'retinanet_ghostnetv3_coco.py'


def test_train_form_counts_its_branches_and_fused_form_less():
    model = GhostNetV3(widen_factor=0.5).train()
    params, macs = count_params_and_macs(model, SIZE, branches=True)
    assert params == sum(p.numel() for p in model.parameters())
    assert model.training  # the count runs in eval mode and hands the model back as it was
    # Counted in eval mode without ``branches``, the blocks fuse on the fly: the fused form's MACs.
    on_the_fly = count_params_and_macs(model, SIZE)[1]
    fuse_model(model)
    fused_params, fused_macs = count_params_and_macs(model, SIZE)
    assert on_the_fly == fused_macs < macs and fused_params < params


def test_timm_counts_the_same_network_alike():
    timm = pytest.importorskip('timm')
    from ghostdet.utils.benchmark import TimmStageEnds
    ours = GhostNetV3(widen_factor=0.5)
    theirs = TimmStageEnds(timm.create_model('ghostnetv3_050'))
    assert count_params_and_macs(ours, SIZE, branches=True) == count_params_and_macs(theirs, SIZE)


def test_detector_parts_add_up_to_the_total():
    init_default_scope('mmdet')
    detector = MODELS.build(Config.fromfile(CONFIG).model)
    parts = complexity_by_part(detector, (128, 128), branches=True)
    assert list(parts) == ['backbone', 'neck', 'bbox_head', 'total']
    assert parts['backbone'] == count_params_and_macs(detector.backbone, (128, 128), branches=True)
    for i in range(2):  # parameters, MACs
        assert sum(parts[p][i] for p in ('backbone', 'neck', 'bbox_head')) == parts['total'][i]
