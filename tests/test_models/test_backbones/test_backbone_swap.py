"""GhostNetV3 swapped into stock MMDetection configs via ``_base_`` + ``_delete_=True``."""
import pytest
from mmengine.config import Config

from ghostdet.testing import loss_and_backward

from ghostdet.models import GhostNetV3

SWAP_TEMPLATE = """
_base_ = 'mmdet::{base}'
custom_imports = dict(imports=['ghostdet'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='GhostNetV3', widen_factor={width}, out_indices={indices}),
    neck=dict(in_channels={channels}))
"""


def build_swapped(tmp_path, base, width=1.0, indices=(1, 2, 3, 4), **overrides):
    path = tmp_path / 'swap.py'
    path.write_text(SWAP_TEMPLATE.format(base=base, width=width, indices=indices,
                                         channels=GhostNetV3.out_channels_for(width, indices)))
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict(overrides)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


@pytest.mark.parametrize('base', ['retinanet/retinanet_r50_fpn_1x_coco.py',
                                  'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'])
def test_one_stage_detectors_train_with_ghostnetv3(tmp_path, base):
    model = build_swapped(tmp_path, base, width=0.5)
    losses = loss_and_backward(model, [(192, 256), (224, 192)])
    assert {'loss_cls', 'loss_bbox'} <= set(losses)


def test_two_stage_detector_trains_with_ghostnetv3(tmp_path):
    model = build_swapped(tmp_path, 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', width=0.5)
    losses = loss_and_backward(model, [(160, 192)])
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox'} <= set(losses)


def test_three_output_variant_with_start_level_0(tmp_path):
    model = build_swapped(tmp_path, 'retinanet/retinanet_r50_fpn_1x_coco.py', width=1.0,
                          indices=(2, 3, 4), **{'model.neck.start_level': 0})
    loss_and_backward(model, [(128, 128)])


@pytest.mark.parametrize('config', ['configs/retinanet/retinanet_ghostnetv3-1.0x_fpn-128_lite-head_1x_coco.py',
                                    'configs/fcos/fcos_ghostnetv3-1.0x_fpn-128_lite-head_1x_coco.py'])
def test_light_heads_train(config):
    from mmdet.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    losses = loss_and_backward(model, [(256, 192)])
    assert {'loss_cls', 'loss_bbox'} <= set(losses)
