"""tools/export_onnx.py: fused RetinaNet / FCOS with GhostNetV3 to ONNX with dynamic batch/height/width
(raw head outputs) or with decoding + NMS; onnxruntime gives PyTorch's outputs at two input sizes;
clear refusals of bad input."""
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdet.structures import DetDataSample

import ghostdet  # noqa: F401
from ghostdet.reparam import build_cpu_model, fuse_model, to_deploy_config, write_deploy_config
from reparam_helpers import detector_config

pytest.importorskip('onnxruntime')
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))
import export_onnx  # noqa: E402

SHAPES = ((1, 3, 256, 256), (1, 3, 320, 192))
TOLERANCE = 1e-4


def _trained_like(cfg: Config) -> torch.nn.Module:
    """An unfused detector whose BN statistics come from forward passes: non-trivial to fuse, and
    scores stay spread out (random statistics saturate them, making NMS order arbitrary)."""
    torch.manual_seed(0)
    model = build_cpu_model(cfg.model)
    model.init_weights()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.extract_feat(torch.randn(2, 3, 128, 128))
    return model.eval()


@pytest.fixture(scope='module', params=['retinanet', 'fcos'])
def files(request, tmp_path_factory) -> dict:
    """Training config + checkpoint and the deploy config + checkpoint."""
    out = tmp_path_factory.mktemp(request.param)
    paths = {name: str(out / name) for name in ('train.py', 'train.pth', 'deploy.py', 'deploy.pth')}
    detector_config(request.param, 'unused/', 'unused/').dump(paths['train.py'])
    cfg = Config.fromfile(paths['train.py'])
    init_default_scope('mmdet')
    model = _trained_like(cfg)
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), paths['train.pth'])
    fuse_model(model)
    torch.save(dict(meta=dict(deploy=True), state_dict=model.state_dict()), paths['deploy.pth'])
    write_deploy_config(paths['deploy.py'], to_deploy_config(cfg))
    return dict(paths, kind=request.param, out=out)


@pytest.mark.slow
def test_onnxruntime_equals_pytorch_at_two_sizes(files):
    model = export_onnx.load_fused_model(files['deploy.py'], files['deploy.pth'])
    path = str(files['out'] / 'model.onnx')
    names = export_onnx.export(model, path, torch.randn(1, 3, 256, 256))
    groups = ('cls_score', 'bbox_pred', 'centerness') if files['kind'] == 'fcos' else ('cls_score', 'bbox_pred')
    assert names == [f'{g}_{level}' for g in groups for level in range(5)]

    session = export_onnx.ort_session(path)
    diffs = export_onnx.compare_with_onnxruntime(export_onnx.onnx_module(model), session, SHAPES)
    assert len(diffs) == len(SHAPES) * len(names)
    assert max(min(d.abs, d.rel) for d in diffs) <= TOLERANCE
    # Batch, height and width are dynamic: levels at strides 8..128 of a 320x192 input, batch 2.
    outputs = session.run(None, {export_onnx.INPUT_NAME: torch.randn(2, 3, 320, 192).numpy()})
    assert [o.shape[:1] + o.shape[2:] for o in outputs[:5]] == [
        (2, 40, 24), (2, 20, 12), (2, 10, 6), (2, 5, 3), (2, 3, 2)]


@pytest.mark.slow
def test_nms_graph_equals_mmdet_predict_and_onnxruntime(files):
    model = export_onnx.load_fused_model(files['deploy.py'], files['deploy.pth'])
    # mmdet takes the nms_pre top-k per level, the graph over all levels: equal when nothing is cut.
    model.bbox_head.test_cfg.nms_pre = 10**6
    detect = export_onnx.DetectionOutputs(model)
    inputs = torch.randn(1, 3, 320, 192)
    with torch.no_grad():
        dets, labels = detect(inputs)
        sample = DetDataSample(metainfo=dict(img_shape=(320, 192), ori_shape=(320, 192), scale_factor=(1., 1.)))
        expected = model.predict(inputs, [sample], rescale=False)[0].pred_instances
    assert len(dets) == model.bbox_head.test_cfg.max_per_img
    torch.testing.assert_close(dets, torch.cat([expected.bboxes, expected.scores[:, None]], 1))
    assert torch.equal(labels, expected.labels)

    path = str(files['out'] / 'nms.onnx')
    assert export_onnx.export(model, path, torch.randn(1, 3, 256, 256), with_nms=True) == ['dets', 'labels']
    diffs = export_onnx.compare_with_onnxruntime(detect, export_onnx.ort_session(path), SHAPES)
    assert max(min(d.abs, d.rel) for d in diffs) <= TOLERANCE


@pytest.mark.slow
def test_cli_fuses_a_training_checkpoint_and_verifies(files, capsys):
    out = str(files['out'] / 'cli.onnx')
    export_onnx.main([files['train.py'], files['train.pth'], out, '--shape', '256', '256', '--verify'])
    printed = capsys.readouterr().out
    assert 'training checkpoint; fused' in printed
    assert 'verified: onnxruntime matches PyTorch' in printed
    assert Path(out).is_file()


def test_training_checkpoint_with_deploy_config_says_fuse_first(files):
    with pytest.raises(SystemExit, match='fuse first with tools/reparameterize.py'):
        export_onnx.main([files['deploy.py'], files['train.pth'], str(files['out'] / 'x.onnx')])


@pytest.mark.parametrize('missing', ['config', 'checkpoint'])
def test_missing_files_are_named(files, missing):
    config = files['deploy.py'] if missing == 'checkpoint' else 'no/such/config.py'
    checkpoint = files['deploy.pth'] if missing == 'config' else 'no/such/weights.pth'
    with pytest.raises(SystemExit, match=f'no/such/{"config.py" if missing == "config" else "weights.pth"} '
                       'does not exist'):
        export_onnx.main([config, checkpoint, str(files['out'] / 'x.onnx')])


def test_checkpoint_of_another_model_is_refused(files, tmp_path):
    other = str(tmp_path / 'other.pth')
    state = torch.load(files['deploy.pth'], weights_only=True)
    state['state_dict'] = {k: v for k, v in state['state_dict'].items() if not k.startswith('bbox_head.')}
    torch.save(state, other)
    with pytest.raises(SystemExit, match='does not match the model of the config'):
        export_onnx.main([files['deploy.py'], other, str(files['out'] / 'x.onnx')])


def test_nms_needs_a_dense_head():
    with pytest.raises(SystemExit, match='--with-nms needs a single-stage dense head'):
        export_onnx.DetectionOutputs(torch.nn.Conv2d(3, 3, 1))


def test_output_must_be_onnx(files):
    with pytest.raises(SystemExit, match='must end with .onnx'):
        export_onnx.main([files['deploy.py'], files['deploy.pth'], str(files['out'] / 'x.pt')])
