"""ReparamCheckpointHook in real (tiny) trainings: deploy files beside every checkpoint, fused outputs
equal to the unfused ones, the same COCO mAP, EMA weights, untouched resume, and bad input."""
import glob
import os.path as osp
import pickle
import re
from typing import List, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

import ghostdet  # noqa: F401  (registers the hook, safe loading)
from ghostdet.deploy import (DEPLOY_CONFIG_NAME, OutputDiff, build_cpu_model, checkpoint_weights,
                             compare_outputs, fuse_weights, load_weights)
from ghostdet.testing import detector_config, evaluate, logged_losses, saved_pair, train

pytestmark = pytest.mark.usefixtures('single_thread')
# Square, odd and non-square in both orientations.
SIZES = {'retinanet': ((128, 128), (97, 161), (161, 97)), 'fcos': ((192, 192), (193, 257), (257, 199))}
REL_TOLERANCE = 1e-4


def _retinanet_cfg(data_root: str, work_dir: str, hook: bool = True) -> Config:
    """3 epochs of 2 iterations, validation and save_best every epoch."""
    cfg = detector_config('retinanet', data_root, work_dir, max_epochs=3, hook=hook)
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint.save_best = 'coco/bbox_mAP'
    return cfg


@pytest.fixture(scope='module')
def retinanet_run(data_root, tmp_path_factory) -> Runner:
    return train(_retinanet_cfg(data_root, str(tmp_path_factory.mktemp('retinanet'))))


@pytest.fixture(scope='module')
def fcos_run(data_root, tmp_path_factory) -> Runner:
    return train(detector_config('fcos', data_root, str(tmp_path_factory.mktemp('fcos'))))


@pytest.fixture(scope='module')
def ema_run(data_root, tmp_path_factory) -> Runner:
    """EMA that clearly differs from the raw weights; only the last checkpoint is kept."""
    cfg = detector_config('retinanet', data_root, str(tmp_path_factory.mktemp('ema')), max_epochs=2)
    cfg.custom_hooks.insert(0, dict(type='EMAHook', momentum=0.5, update_buffers=True, priority=49))
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    return train(cfg)


def _ckpt(runner: Runner, name: str) -> str:
    return osp.join(runner.work_dir, name)


def _deploy_cfg(runner: Runner) -> Config:
    return Config.fromfile(_ckpt(runner, DEPLOY_CONFIG_NAME))


def _fused_vs_unfused(runner: Runner, name: str, sizes) -> List[OutputDiff]:
    """Outputs of the unfused model (training checkpoint) vs the deploy config's model loaded from
    the deploy checkpoint."""
    return compare_outputs(*saved_pair(runner.work_dir, runner.cfg.model, name), sizes)


def _max_rel(diffs: List[OutputDiff]) -> float:
    return max(d.rel for d in diffs)


@pytest.mark.slow
def test_deploy_files_beside_every_checkpoint(retinanet_run):
    work_dir = retinanet_run.work_dir
    files = {osp.basename(p)[:-len('.pth')] for p in glob.glob(osp.join(work_dir, '*.pth'))}
    saved = sorted(name for name in files if not name.endswith('_deploy'))
    best = [name for name in saved if name.startswith('best_coco_bbox_mAP_epoch_')]
    assert saved == sorted(['epoch_1', 'epoch_2', 'epoch_3'] + best) and len(best) == 1
    # Exactly one deploy file per checkpoint: an older best's went with it.
    assert files == set(saved) | {f'{name}_deploy' for name in saved}
    assert not glob.glob(osp.join(work_dir, '.*.tmp'))

    deploy_cfg = _deploy_cfg(retinanet_run)
    assert deploy_cfg.model.backbone.deploy is True and deploy_cfg.model.backbone.init_cfg is None
    assert deploy_cfg.custom_hooks == [] and deploy_cfg.load_from is None
    deploy_model = build_cpu_model(deploy_cfg.model)
    for name in saved:
        checkpoint = _load_checkpoint(_ckpt(retinanet_run, f'{name}_deploy.pth'))
        meta = checkpoint['meta']
        assert set(checkpoint) == {'meta', 'state_dict'}
        assert meta['deploy'] is True and meta['source_checkpoint'] == f'{name}.pth'
        assert meta['num_params'] == sum(p.numel() for p in deploy_model.parameters())
        assert 0 < meta['size_mb'] < osp.getsize(_ckpt(retinanet_run, f'{name}.pth')) / 2**20
        assert meta['dataset_meta']['classes'] == retinanet_run.train_dataloader.dataset.metainfo['classes']
        assert not any('.branches.' in k for k in checkpoint['state_dict'])
        load_weights(deploy_model, checkpoint['state_dict'])  # strict
    with open(osp.join(retinanet_run.log_dir, f'{retinanet_run.timestamp}.log')) as f:
        log = f.read()
    assert 'Deploy checkpoint epoch_3_deploy.pth:' in log and 'blocks fused in' in log and 'M parameters' in log


@pytest.mark.slow
def test_each_deploy_file_written_once(retinanet_run):
    """After each new best, CheckpointHook saves epoch_N.pth a second time (same weights, to record the
    best in its message hub): its deploy file is not written again."""
    with open(osp.join(retinanet_run.log_dir, f'{retinanet_run.timestamp}.log')) as f:
        log = f.read()
    written = re.findall(r'Deploy checkpoint (\S+): ', log)
    best = re.findall(r'The best checkpoint .* is saved to (\S+)\.pth', log)
    assert best and sorted(written) == sorted([f'epoch_{i}_deploy.pth' for i in (1, 2, 3)] +
                                              [f'{name}_deploy.pth' for name in best])


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['retinanet', 'fcos'])
def test_fused_outputs_equal_unfused_after_training(kind, request):
    runner = request.getfixturevalue(f'{kind}_run')
    name = 'epoch_3' if kind == 'retinanet' else 'epoch_1'
    state = _load_checkpoint(_ckpt(runner, f'{name}.pth'))['state_dict']
    # Training moved the BN statistics away from their initial (0, 1).
    assert max((v - 1).abs().max().item() for k, v in state.items() if k.endswith('running_var')) > 0.05
    diffs = _fused_vs_unfused(runner, name, SIZES[kind])
    levels = 5
    assert len(diffs) == len(SIZES[kind]) * levels * (3 if kind == 'fcos' else 2)
    print(f'{kind}: max fused-vs-unfused difference abs {max(d.abs for d in diffs):.2e}, '
          f'rel {_max_rel(diffs):.2e}')
    assert _max_rel(diffs) <= REL_TOLERANCE


def _assert_same_detections(dump_a: str, dump_b: str) -> None:
    """Same labels, scores and boxes per image, up to float rounding (logits reach ~100 here)."""
    with open(dump_a, 'rb') as fa, open(dump_b, 'rb') as fb:
        dets_a, dets_b = pickle.load(fa), pickle.load(fb)
    assert len(dets_a) == len(dets_b) > 0
    for a, b in zip(dets_a, dets_b):
        pa, pb = a['pred_instances'], b['pred_instances']
        assert len(pa['scores']) > 0 and torch.equal(pa['labels'], pb['labels'])
        torch.testing.assert_close(pb['scores'], pa['scores'], rtol=0, atol=1e-3)
        torch.testing.assert_close(pb['bboxes'], pa['bboxes'], rtol=0, atol=0.1)  # pixels


def _assert_same_coco_map(runner: Runner, name: str, tmp_path) -> Tuple[str, str]:
    """Evaluate the training and the deploy checkpoint; returns the files of their raw detections."""
    train_metrics, train_dump = evaluate(runner.cfg, _ckpt(runner, f'{name}.pth'), str(tmp_path / 'train'))
    deploy_metrics, deploy_dump = evaluate(_deploy_cfg(runner), _ckpt(runner, f'{name}_deploy.pth'),
                                           str(tmp_path / 'deploy'))
    print(f'{name}: training {train_metrics}\n{name}: deploy {deploy_metrics}')
    assert 'coco/bbox_mAP' in train_metrics and deploy_metrics == train_metrics
    return train_dump, deploy_dump


@pytest.mark.slow
def test_deploy_checkpoint_gives_same_coco_map(retinanet_run, tmp_path):
    _assert_same_detections(*_assert_same_coco_map(retinanet_run, 'epoch_3', tmp_path))


@pytest.mark.slow
def test_ema_weights_are_fused(ema_run, tmp_path):
    names = sorted(osp.basename(p) for p in glob.glob(osp.join(ema_run.work_dir, '*.pth')))
    assert names == ['epoch_2.pth', 'epoch_2_deploy.pth']  # epoch_1's deploy file left with it
    assert not any(h.type == 'EMAHook' for h in _deploy_cfg(ema_run).custom_hooks)
    checkpoint = _load_checkpoint(_ckpt(ema_run, 'epoch_2.pth'))
    deployed = _load_checkpoint(_ckpt(ema_run, 'epoch_2_deploy.pth'))['state_dict']

    def is_deployed(weights: dict) -> bool:
        model = build_cpu_model(ema_run.cfg.model)
        load_weights(model, weights)
        fused = fuse_weights(model).state_dict
        return all(torch.equal(fused[k], v) for k, v in deployed.items())

    assert is_deployed(checkpoint_weights(checkpoint, ema=True))
    assert not is_deployed(checkpoint_weights(checkpoint, ema=False))
    _assert_same_detections(*_assert_same_coco_map(ema_run, 'epoch_2', tmp_path))


@pytest.mark.slow
def test_nothing_to_fuse_warns_once_and_writes_nothing(data_root, tmp_path):
    resnet = dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3), norm_eval=False, init_cfg=None)
    cfg = detector_config('retinanet', data_root, str(tmp_path), max_epochs=2, batch_size=4, backbone=resnet,
                          neck_in_channels=[64, 128, 256, 512])
    runner = train(cfg)
    assert osp.isfile(tmp_path / 'epoch_2.pth')
    assert not glob.glob(str(tmp_path / '*_deploy.pth')) and not osp.exists(tmp_path / DEPLOY_CONFIG_NAME)
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        assert f.read().count('nothing to re-parameterize') == 1


@pytest.mark.slow
def test_mobileone_backbone_gets_deploy_checkpoint(data_root, tmp_path):
    mobileone = dict(type='mmpretrain.MobileOne', arch='s0', out_indices=(0, 1, 2, 3), init_cfg=None)
    cfg = detector_config('retinanet', data_root, str(tmp_path), batch_size=4, backbone=mobileone,
                          neck_in_channels=[48, 128, 256, 1024])
    cfg.custom_imports = dict(imports=['ghostdet', 'mmpretrain.models'], allow_failed_imports=False)
    runner = train(cfg)
    deploy_backbone = _deploy_cfg(runner).model.backbone
    assert deploy_backbone.type == 'mmpretrain.MobileOne' and deploy_backbone.deploy is True
    assert _max_rel(_fused_vs_unfused(runner, 'epoch_1', SIZES['retinanet'])) <= REL_TOLERANCE


def test_priority_before_checkpoint_hook_is_refused(data_root, tmp_path):
    cfg = detector_config('retinanet', data_root, str(tmp_path))
    cfg.custom_hooks = [dict(type='ReparamCheckpointHook', priority='LOW')]
    with pytest.raises(ValueError, match='must run after CheckpointHook'):
        Runner.from_cfg(cfg).train()  # before_run, before any iteration


@pytest.mark.slow
def test_resume_is_unaffected(retinanet_run, data_root, tmp_path):
    """The hook changes neither the training (same losses and checkpoint as without it) nor what a
    resumed run sees. Last in this file: resuming re-points the best checkpoint to the first run."""
    plain = train(_retinanet_cfg(data_root, str(tmp_path / 'plain'), hook=False))
    assert logged_losses(plain) == logged_losses(retinanet_run)
    with_hook = _load_checkpoint(_ckpt(retinanet_run, 'epoch_2.pth'))
    without = _load_checkpoint(_ckpt(plain, 'epoch_2.pth'))
    assert with_hook.keys() == without.keys()
    for key, value in with_hook['state_dict'].items():
        assert torch.equal(value, without['state_dict'][key]), key

    resumed_cfg = _retinanet_cfg(data_root, str(tmp_path / 'resumed'))
    resumed_cfg.update(resume=True, load_from=_ckpt(retinanet_run, 'epoch_2.pth'))
    resumed = train(resumed_cfg)
    plain_losses = logged_losses(plain)
    assert logged_losses(resumed) == {it: plain_losses[it] for it in (5, 6)}
