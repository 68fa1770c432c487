"""tools/export_onnx.py: a training or deploy checkpoint to ONNX, verified against PyTorch on request;
clear refusals of bad input."""
from pathlib import Path

import pytest
import torch

from ghostdet.deploy.onnx import ort_session
from ghostdet.testing import load_tool

pytest.importorskip('onnxruntime')
tool = load_tool('export_onnx')


@pytest.mark.slow
def test_cli_fuses_a_training_checkpoint_and_verifies(detector_files, capsys):
    out = str(detector_files['out'] / 'cli.onnx')
    tool.main([detector_files['train.py'], detector_files['train.pth'], out, '--shape', '256', '256', '--verify'])
    printed = capsys.readouterr().out
    assert 'training checkpoint; fused' in printed
    assert 'verified: onnxruntime matches PyTorch' in printed
    assert Path(out).is_file()


@pytest.mark.slow
def test_static_export_takes_its_shape_only(detector_files, capsys):
    out = str(detector_files['out'] / 'static.onnx')
    tool.main([detector_files['deploy.py'], detector_files['deploy.pth'], out, '--shape', '192', '256', '--static',
               '--verify'])
    printed = capsys.readouterr().out
    assert 'static (1, 3, 192, 256)' in printed and 'verified: onnxruntime matches PyTorch' in printed
    session = ort_session(out)
    assert session.get_inputs()[0].shape == [1, 3, 192, 256]
    with pytest.raises(Exception, match='Got invalid dimensions'):
        session.run(None, {'input': torch.randn(1, 3, 256, 256).numpy()})


def test_training_checkpoint_with_deploy_config_says_fuse_first(detector_files):
    with pytest.raises(SystemExit, match='fuse first with tools/reparameterize.py'):
        tool.main([detector_files['deploy.py'], detector_files['train.pth'], str(detector_files['out'] / 'x.onnx')])


@pytest.mark.parametrize('missing', ['config', 'checkpoint'])
def test_missing_files_are_named(detector_files, missing):
    config = detector_files['deploy.py'] if missing == 'checkpoint' else 'no/such/config.py'
    checkpoint = detector_files['deploy.pth'] if missing == 'config' else 'no/such/weights.pth'
    with pytest.raises(SystemExit, match=f'no/such/{"config.py" if missing == "config" else "weights.pth"} '
                       'does not exist'):
        tool.main([config, checkpoint, str(detector_files['out'] / 'x.onnx')])


def test_checkpoint_of_another_model_is_refused(detector_files, tmp_path):
    other = str(tmp_path / 'other.pth')
    state = torch.load(detector_files['deploy.pth'], weights_only=True)
    state['state_dict'] = {k: v for k, v in state['state_dict'].items() if not k.startswith('bbox_head.')}
    torch.save(state, other)
    with pytest.raises(SystemExit, match='does not match the model of the config'):
        tool.main([detector_files['deploy.py'], other, str(detector_files['out'] / 'x.onnx')])


def test_output_must_be_onnx(detector_files):
    with pytest.raises(SystemExit, match='must end with .onnx'):
        tool.main([detector_files['deploy.py'], detector_files['deploy.pth'], str(detector_files['out'] / 'x.pt')])
