"""ghostdet.deploy.onnx: fused RetinaNet / FCOS with GhostNetV3 to ONNX with dynamic batch/height/width
(raw head outputs) or with decoding + NMS; onnxruntime gives PyTorch's outputs at two input sizes."""
import pytest
import torch
from mmengine.config import Config

from mmdet.structures import DetDataSample

import ghostdet  # noqa: F401
from ghostdet.deploy import load_fused_model, read_checkpoint
from ghostdet.deploy.onnx import (INPUT_NAME, DetectionOutputs, compare_with_onnxruntime, export_onnx, onnx_module,
                                  ort_session)

pytest.importorskip('onnxruntime')

SHAPES = ((1, 3, 256, 256), (1, 3, 320, 192))
TOLERANCE = 1e-4


def _deploy_model(files: dict) -> torch.nn.Module:
    model, num_fused = load_fused_model(Config.fromfile(files['deploy.py']), read_checkpoint(files['deploy.pth']))
    assert num_fused == 0  # a deploy checkpoint: nothing left to fuse
    return model


@pytest.mark.slow
def test_onnxruntime_equals_pytorch_at_two_sizes(detector_files):
    model = _deploy_model(detector_files)
    path = str(detector_files['out'] / 'model.onnx')
    names = export_onnx(model, path, torch.randn(1, 3, 256, 256))
    groups = (('cls_score', 'bbox_pred', 'score_factor') if detector_files['kind'] == 'fcos' else
              ('cls_score', 'bbox_pred'))
    assert names == [f'{g}_{level}' for g in groups for level in range(5)]

    session = ort_session(path)
    diffs = compare_with_onnxruntime(onnx_module(model), session, SHAPES)
    assert len(diffs) == len(SHAPES) * len(names)
    assert max(min(d.abs, d.rel) for d in diffs) <= TOLERANCE
    # Batch, height and width are dynamic: levels at strides 8..128 of a 320x192 input, batch 2.
    outputs = session.run(None, {INPUT_NAME: torch.randn(2, 3, 320, 192).numpy()})
    assert [o.shape[:1] + o.shape[2:] for o in outputs[:5]] == [
        (2, 40, 24), (2, 20, 12), (2, 10, 6), (2, 5, 3), (2, 3, 2)]


@pytest.mark.slow
def test_nms_graph_equals_mmdet_predict_and_onnxruntime(detector_files):
    model = _deploy_model(detector_files)
    # mmdet takes the nms_pre top-k per level, the graph over all levels: equal when nothing is cut.
    model.bbox_head.test_cfg.nms_pre = 10**6
    detect = DetectionOutputs(model)
    inputs = torch.randn(1, 3, 320, 192)
    with torch.no_grad():
        dets, labels = detect(inputs)
        sample = DetDataSample(metainfo=dict(img_shape=(320, 192), ori_shape=(320, 192), scale_factor=(1., 1.)))
        expected = model.predict(inputs, [sample], rescale=False)[0].pred_instances
    assert len(dets) == model.bbox_head.test_cfg.max_per_img
    torch.testing.assert_close(dets, torch.cat([expected.bboxes, expected.scores[:, None]], 1))
    assert torch.equal(labels, expected.labels)

    path = str(detector_files['out'] / 'nms.onnx')
    assert export_onnx(model, path, torch.randn(1, 3, 256, 256), with_nms=True) == ['dets', 'labels']
    diffs = compare_with_onnxruntime(detect, ort_session(path), SHAPES)
    assert max(min(d.abs, d.rel) for d in diffs) <= TOLERANCE


def test_nms_needs_a_dense_head():
    with pytest.raises(ValueError, match='--with-nms needs a single-stage dense head'):
        DetectionOutputs(torch.nn.Conv2d(3, 3, 1))


def test_export_leaves_the_model_in_eval_mode(tmp_path):
    """torch.onnx.export restores the mode of the module it is given; a fresh wrapper in train mode would hand
    that back to the model (BN with batch statistics afterwards: batch-1 calls fail on 1x1 maps)."""
    model = ghostdet.GhostNetV3(0.5, deploy=True).eval()
    export_onnx(model, str(tmp_path / 'backbone.onnx'), torch.randn(1, 3, 64, 64))
    assert not any(module.training for module in model.modules())
