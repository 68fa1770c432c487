"""tools/reparameterize.py and the shared logic in ghostdet.deploy: fusing an existing checkpoint
(EMA-aware), --verify, refusing deploy or mismatching checkpoints, and the deploy config."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import EMAHook
from mmengine.registry import MODELS as ENGINE_MODELS
from mmengine.runner.checkpoint import _load_checkpoint

import ghostdet  # noqa: F401
from ghostdet.deploy import (build_cpu_model, checkpoint_weights, compare_outputs, deploy_state_dict, load_weights,
                             source_weights, to_deploy_config)
from ghostdet.testing import detector_config, load_tool

pytestmark = pytest.mark.usefixtures('single_thread')
tool = load_tool('reparameterize')

SIZES = ((128, 128), (97, 161))


@pytest.fixture(scope='module')
def config_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp('cfg') / 'retinanet_tiny.py')
    detector_config('retinanet', 'unused/', 'unused/').dump(path)
    return path


def _trained_like(cfg: Config, seed: int) -> nn.Module:
    """An unfused detector with non-trivial BN statistics and affine parameters."""
    torch.manual_seed(seed)
    model = build_cpu_model(cfg.model)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, std=0.1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.extract_feat(torch.randn(2, 3, 96, 128) * 2 + 0.5)
    return model.eval()


@pytest.fixture(scope='module')
def checkpoints(config_file, tmp_path_factory) -> dict:
    """A plain training checkpoint and one laid out by the real EMAHook (state_dict = EMA weights)."""
    cfg = Config.fromfile(config_file)
    out = tmp_path_factory.mktemp('ckpt')
    model = _trained_like(cfg, seed=0)
    plain = str(out / 'epoch_1.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), plain)

    ema = ENGINE_MODELS.build(dict(type='ExponentialMovingAverage', momentum=0.5), default_args=dict(model=model))
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    ema.update_parameters(model)  # the second one averages
    hook = EMAHook()
    hook.ema_model = ema
    checkpoint = dict(meta=dict(epoch=2), state_dict=model.state_dict())
    hook.before_save_checkpoint(None, checkpoint)
    with_ema = str(out / 'epoch_2.pth')
    torch.save(checkpoint, with_ema)
    return dict(plain=plain, ema=with_ema)


def _run(*args: str) -> int:
    return tool.main(list(args))


def _deploy_model(out_dir: str, name: str) -> nn.Module:
    model = build_cpu_model(Config.fromfile(osp.join(out_dir, 'deploy_config.py')).model)
    load_weights(model, _load_checkpoint(osp.join(out_dir, f'{name}_deploy.pth'))['state_dict'])
    return model


def _unfused(config_file: str, weights: dict) -> nn.Module:
    model = build_cpu_model(Config.fromfile(config_file).model)
    load_weights(model, weights)
    return model


def test_fuse_and_verify(config_file, checkpoints, tmp_path, capsys):
    assert _run(config_file, checkpoints['plain'], str(tmp_path), '--verify') == 0
    out = capsys.readouterr().out
    assert 'epoch_1_deploy.pth: ' in out and 'blocks fused in' in out and 'parameters' in out
    rows = [line for line in out.splitlines() if 'cls_score_' in line or 'bbox_pred_' in line]
    assert len(rows) == len(tool.VERIFY_SIZES) * 5 * 2
    assert '1 x 257 x 383' in out and out.rstrip().endswith(': OK')
    meta = _load_checkpoint(str(tmp_path / 'epoch_1_deploy.pth'))['meta']
    assert meta['deploy'] is True and meta['epoch'] == 1 and meta['source_checkpoint'] == 'epoch_1.pth'
    assert meta['num_params'] > 0 and meta['size_mb'] > 0


@pytest.mark.parametrize('no_ema', [False, True])
def test_ema_weights_by_default_raw_with_no_ema(config_file, checkpoints, tmp_path, no_ema):
    checkpoint = torch.load(checkpoints['ema'], weights_only=True)
    assert _run(config_file, checkpoints['ema'], str(tmp_path), *(['--no-ema'] if no_ema else [])) == 0
    fused = _deploy_model(str(tmp_path), 'epoch_2')
    wanted = checkpoint_weights(checkpoint, ema=not no_ema)
    other = checkpoint_weights(checkpoint, ema=no_ema)
    assert max(d.rel for d in compare_outputs(_unfused(config_file, wanted), fused, SIZES)) <= 1e-4
    assert max(d.rel for d in compare_outputs(_unfused(config_file, other), fused, SIZES)) > 1e-3


def test_deploy_checkpoint_is_refused(config_file, checkpoints, tmp_path):
    assert _run(config_file, checkpoints['plain'], str(tmp_path / 'a')) == 0
    deploy = str(tmp_path / 'a' / 'epoch_1_deploy.pth')
    with pytest.raises(SystemExit, match='already a deploy \\(fused\\) checkpoint'):
        _run(config_file, deploy, str(tmp_path / 'b'))
    # Recognised by its keys too, without our meta (e.g. fused by another tool).
    bare = str(tmp_path / 'bare.pth')
    torch.save(dict(state_dict=torch.load(deploy, weights_only=True)['state_dict']), bare)
    with pytest.raises(SystemExit, match='already a deploy'):
        _run(config_file, bare, str(tmp_path / 'b'))
    assert not osp.exists(tmp_path / 'b')


def test_mismatching_checkpoint_names_keys(config_file, checkpoints, tmp_path):
    state = dict(torch.load(checkpoints['plain'], weights_only=True)['state_dict'])
    state.pop('backbone.stem.0.weight')
    state['backbone.extra.weight'] = torch.zeros(1)
    state['bbox_head.retina_cls.bias'] = torch.zeros(7)
    bad = str(tmp_path / 'bad.pth')
    torch.save(dict(state_dict=state), bad)
    with pytest.raises(SystemExit) as err:
        _run(config_file, bad, str(tmp_path / 'out'))
    message = str(err.value)
    for expected in ('missing in the checkpoint: backbone.stem.0.weight', 'not in the model: backbone.extra.weight',
                     'bbox_head.retina_cls.bias (7,)'):
        assert expected in message


def test_missing_checkpoint_is_a_clear_error(config_file, tmp_path):
    with pytest.raises(SystemExit, match='does not exist'):
        _run(config_file, str(tmp_path / 'nope.pth'), str(tmp_path))


def test_deploy_config_of_a_distiller(config_file):
    """The deploy model is the student (with the distiller's preprocessor); teacher, KD losses and
    training-only hooks are gone; every class taking ``deploy`` gets it, whatever its registry."""
    student = Config.fromfile(config_file).model
    preprocessor = student.pop('data_preprocessor')
    student.backbone = dict(type='mmpretrain.RepVGG', arch='A0', init_cfg=dict(type='Pretrained', checkpoint='x'))
    cfg = Config(dict(
        model=dict(type='SomeDistiller', student=student, teacher=dict(type='RetinaNet'),
                   data_preprocessor=preprocessor, distill_loss=dict(type='MSELoss')),
        custom_hooks=[dict(type='ReparamCheckpointHook'), dict(type='EMAHook', priority=49),
                      dict(type='DistillLossScheduleHook'), dict(type='CheckInvalidLossHook')],
        load_from='teacher.pth'))
    deploy = to_deploy_config(cfg)
    assert deploy.model.type == 'RetinaNet' and 'teacher' not in deploy.model
    assert deploy.model.data_preprocessor == preprocessor
    assert deploy.model.backbone.deploy is True and deploy.model.backbone.init_cfg is None
    assert 'deploy' not in deploy.model.neck and 'deploy' not in deploy.model.bbox_head
    assert [h.type for h in deploy.custom_hooks] == ['CheckInvalidLossHook']
    assert deploy.load_from is None
    assert cfg.model.student.backbone.get('deploy') is None  # the input is left alone


def test_student_weights_of_a_distiller():
    cfg = Config(dict(model=dict(type='SomeDistiller', student=dict(type='RetinaNet'))))
    state = {'student.backbone.w': torch.ones(1), 'connector.w': torch.zeros(1)}
    assert source_weights(state, cfg) == {'backbone.w': state['student.backbone.w']}

    class Distiller(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = nn.Linear(2, 2)
            self.connector = nn.Linear(2, 2)

    assert set(deploy_state_dict(Distiller())) == {'weight', 'bias'}
    assert set(deploy_state_dict(nn.Linear(2, 2))) == {'weight', 'bias'}
