"""The RTMDet- and YOLOX-GhostNetV3 configs (mmdet's RTMDet-tiny / YOLOX-tiny neck, head and recipe on
GhostNetV3) train with the fuse-on-save hook, and their deploy checkpoints equal the trained model and
export to ONNX exactly."""
import pytest
import torch

from ghostdet.deploy import compare_outputs
from ghostdet.deploy.onnx import compare_with_onnxruntime, export_onnx, onnx_module, ort_session
from ghostdet.models import GhostNetV3
from ghostdet.testing import detector_config, logged_losses, saved_pair, train

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.mark.slow
@pytest.mark.parametrize('kind, width', [('rtmdet', 0.5), ('rtmdet', 1.0), ('yolox', 1.0)])
def test_trains_fuses_and_matches_onnxruntime(kind, width, data_root, tmp_path):
    out_indices = (2, 3, 4)  # strides 8/16/32; the PAFPN needs inputs in multiples of 32
    backbone = dict(type='GhostNetV3', widen_factor=width, out_indices=out_indices, init_cfg=None)
    cfg = detector_config(kind, data_root, str(tmp_path), backbone=backbone,
                          neck_in_channels=GhostNetV3.out_channels_for(width, out_indices))
    runner = train(cfg)
    assert len(logged_losses(runner)) == 2 and all(torch.isfinite(torch.tensor(list(logged_losses(runner).values()))))

    unfused, fused = saved_pair(str(tmp_path), cfg.model, 'epoch_1')  # the hook's deploy file: fused already
    assert max(d.rel for d in compare_outputs(unfused, fused, [(128, 128), (96, 160)])) <= 1e-4

    path = str(tmp_path / f'{kind}.onnx')
    names = export_onnx(fused, path, torch.randn(1, 3, 128, 128))
    groups = ('cls_score', 'bbox_pred', 'score_factor') if kind == 'yolox' else ('cls_score', 'bbox_pred')
    assert names == [f'{group}_{level}' for group in groups for level in range(3)]
    diffs = compare_with_onnxruntime(onnx_module(fused), ort_session(path), [(1, 3, 128, 128), (1, 3, 160, 96)])
    assert max(min(d.abs, d.rel) for d in diffs) <= 1e-4
