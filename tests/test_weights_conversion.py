"""tools/convert_weights.py and GhostNetV3 Pretrained loading, on checkpoints made here."""
import argparse

import pytest
import torch

timm = pytest.importorskip('timm')

from ghostdet.models import GhostNetV3  # noqa: E402
from ghostdet.testing import official_layout, randomize_bn, run_tool  # noqa: E402
from ghostdet.weights import UnknownCheckpointLayout, convert_to_ghostdet  # noqa: E402


@pytest.fixture(scope='module')
def timm_model():
    torch.manual_seed(0)
    return randomize_bn(timm.create_model('ghostnetv3_050')).eval()


@pytest.mark.parametrize('fuse', [False, True])
def test_official_checkpoint_converts_and_loads_via_init_cfg(tmp_path, timm_model, fuse):
    ema = official_layout(timm_model.state_dict())
    raw = {k: torch.zeros_like(v) for k, v in ema.items()}  # the non-EMA weights must not be taken
    src = tmp_path / 'ghostnetv3-0.5.pth.tar'
    torch.save({'state_dict': raw, 'state_dict_ema': ema, 'epoch': 599,
                'args': argparse.Namespace(model='ghostnetv3', width=0.5)}, src)
    dst = tmp_path / 'out' / 'backbone.pth'
    result = run_tool('convert_weights', src, dst, *(['--fuse'] if fuse else []))
    assert result.returncode == 0, result.stderr
    assert 'GhostNetV3-0.5x' in result.stdout

    model = GhostNetV3(0.5, out_indices=tuple(range(6)), deploy=fuse,
                       init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()  # strict: any missing/unexpected key raises
    model.eval()
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        expected = timm_model.blocks(timm_model.act1(timm_model.bn1(timm_model.conv_stem(x))))
        assert torch.allclose(model(x)[-1], expected, rtol=1e-4, atol=1e-5)
    saved = torch.load(dst, weights_only=True)
    assert not any(k.startswith(('conv_head', 'classifier')) for k in saved['state_dict'])
    assert saved['meta']['deploy'] is fuse


def test_timm_state_dict_loads_directly_through_init_cfg(tmp_path, timm_model):
    src = tmp_path / 'timm.pth'
    torch.save(timm_model.state_dict(), src)
    model = GhostNetV3(0.5, init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    model.init_weights()
    assert torch.equal(model.stem[0].weight, timm_model.conv_stem.weight)


def test_detector_checkpoint_backbone_extracted():
    backbone = GhostNetV3(0.5)
    state = {'backbone.' + k: v for k, v in backbone.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    converted = convert_to_ghostdet({'state_dict': state, 'meta': {}})
    assert converted.keys() == backbone.state_dict().keys()


def test_unrecognised_layout_is_refused(tmp_path):
    with pytest.raises(UnknownCheckpointLayout, match='Unrecognised checkpoint layout'):
        convert_to_ghostdet({'features.0.weight': torch.zeros(1)})
    src = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(1)}, src)
    result = run_tool('convert_weights', src, tmp_path / 'out.pth')
    assert result.returncode != 0 and 'Unrecognised checkpoint layout' in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_missing_pretrained_file_says_what_to_do(tmp_path):
    model = GhostNetV3(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='convert_weights.py.*init_cfg=None'):
        model.init_weights()


def test_fused_checkpoint_into_unfused_model_is_refused(tmp_path):
    src = tmp_path / 'fused.pth'
    torch.save({'state_dict': GhostNetV3(deploy=True).state_dict()}, src)
    with pytest.raises(ValueError, match='deploy=True'):
        GhostNetV3(init_cfg=dict(type='Pretrained', checkpoint=str(src))).init_weights()
