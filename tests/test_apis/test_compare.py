"""The detector comparison: every detector's recipe brought to the shapes budget (real mmdet and ghostdet
configs), the Pareto front, the table; and tools/compare_detectors.py end to end on a tiny budget."""
import json
from dataclasses import asdict

import pytest

from ghostdet.apis.compare import (DETECTORS, NO_MIXUP, RUN_RECORD, Budget, Run, deployable, detector_configs,
                                   finished_run, native_size, pareto_front, pipelines, recipe_hash, table)
from ghostdet.apis.runner_setup import read_config
from ghostdet.datasets import make_shapes_dataset
from ghostdet.testing.tools import run_tool

BUDGET = Budget(image_size=256, batch_size=8, epochs=4, warmup_iters=30)


def transforms(cfg, kind: str) -> list:
    """Every transform of ``kind`` in the config's pipelines."""
    return [t for p in pipelines(cfg) for t in p if t['type'] == kind]


@pytest.fixture(scope='module')
def configs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    names = [*DETECTORS, f'RTMDet-GhostNetV3-1.0x{NO_MIXUP}']
    return root, detector_configs(names, root, BUDGET, iters_per_epoch=50, seed=3)


@pytest.mark.parametrize('name, native', [('RTMDet-tiny', 640), ('YOLOX-tiny', 640), ('SSDLite-MobileNetV2', 320),
                                          ('RTMDet-GhostNetV3-0.5x', 640)])
def test_native_size_is_the_recipes_training_canvas(name, native):
    assert native_size(read_config(DETECTORS[name])) == native


def test_every_detector_trains_on_the_shapes_splits_at_the_budget(configs):
    root, cfgs = configs
    for name, cfg in cfgs.items():
        for loader, split in (('train_dataloader', 'train'), ('test_dataloader', 'val')):
            dataset = cfg[loader].dataset
            while 'dataset' in dataset and dataset.type != 'RepeatDataset':
                dataset = dataset.dataset
            assert dataset.type == 'CheckedCocoDataset' and dataset.data_root.startswith(root), name
            assert dataset.ann_file == f'annotations/instances_{split}.json', name
        assert cfg.train_dataloader.dataset.type != 'RepeatDataset'
        assert cfg.train_dataloader.batch_size == 8 and cfg.test_evaluator.ann_file.startswith(root)
        assert cfg.model.bbox_head.num_classes == 3 and cfg.model.backbone.init_cfg is None
        assert cfg.train_cfg == dict(type='EpochBasedTrainLoop', max_epochs=4, val_interval=4)
        assert cfg.param_scheduler[-1]['end'] == 200 and cfg.randomness.seed == 3
        tested = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] in ('Resize', 'Pad')]
        assert all(t.get('scale', t.get('size', (256, 256))) == (256, 256) for t in tested), name
    assert cfgs['SSDLite-MobileNetV2'].model.bbox_head.type == 'PredictableSSDHead'


def test_recipes_keep_their_optimizer_and_augmentation_scaled(configs):
    _, cfgs = configs
    rtmdet, yolox = cfgs['RTMDet-tiny'], cfgs['YOLOX-tiny']
    assert rtmdet.optim_wrapper.optimizer.type == 'AdamW' and yolox.optim_wrapper.optimizer.type == 'SGD'
    assert transforms(rtmdet, 'CachedMosaic')[0]['img_scale'] == (256, 256)
    assert transforms(rtmdet, 'RandomResize')[0]['scale'] == (512, 512)  # 1280 * 256 / 640
    assert transforms(yolox, 'RandomAffine')[0]['border'] == (-128, -128)
    assert yolox.model.data_preprocessor.batch_augments[0]['random_size_range'] == (128, 256)
    hooks = {h['type']: h for h in rtmdet.custom_hooks}
    assert hooks['PipelineSwitchHook']['switch_epoch'] == 3 and hooks['EMAHook']['momentum'] == 0.02
    assert {h['type']: h for h in yolox.custom_hooks}['YOLOXModeSwitchHook']['num_last_epochs'] == 1


def test_the_no_mixup_twin_differs_only_by_mixup(configs):
    _, cfgs = configs
    with_mixup, without = cfgs['RTMDet-GhostNetV3-1.0x'], cfgs[f'RTMDet-GhostNetV3-1.0x{NO_MIXUP}']
    assert transforms(with_mixup, 'CachedMixUp') and not transforms(without, 'CachedMixUp')
    assert transforms(without, 'CachedMosaic')
    assert with_mixup.model == without.model


def test_unknown_detector_names_the_choices():
    with pytest.raises(SystemExit, match='choose from RTMDet-GhostNetV3-1.0x'):
        detector_configs(['RTMDet-huge'], '/nowhere', BUDGET, 50, 0)


def test_pareto_front_keeps_the_undominated():
    points = {'a': (10., 0.5), 'b': (20., 0.6), 'c': (25., 0.55), 'd': (10., 0.4)}
    assert pareto_front(points) == ['a', 'b']


def test_table_has_seeds_means_and_front():
    runs = [Run('A', s, m, m + .1, m / 2, 'c.pth', 'c.py', 1.) for s, m in ((0, .4), (1, .6))]
    latency = {'A': dict(params_m=1., gmacs=2., eager=30., onnx=20., end_to_end=50.)}
    lines = table(runs, latency, ['A']).splitlines()
    assert lines[0].startswith('| detector | params M | GMACs | mAP s0 | mAP s1 | mAP |')
    assert lines[2] == '| A | 1.00 | 2.00 | 0.400 | 0.600 | 0.500 | 0.600 | 0.250 | 30.0 | 20.0 | 50.0 | yes |'


def test_a_run_is_evaluated_from_its_deploy_files_when_the_hook_wrote_them(tmp_path):
    checkpoint = str(tmp_path / 'epoch_4.pth')
    assert deployable(str(tmp_path), checkpoint) == (str(tmp_path / 'config.py'), checkpoint)  # nothing fused
    for name in ('epoch_4_deploy.pth', 'deploy_config.py'):
        (tmp_path / name).write_text('')
    assert deployable(str(tmp_path), checkpoint) == (str(tmp_path / 'deploy_config.py'),
                                                     str(tmp_path / 'epoch_4_deploy.pth'))


def test_a_rerun_reuses_a_finished_run_of_the_same_config(configs, tmp_path):
    _, cfgs = configs
    cfg, other = cfgs['RTMDet-tiny'], cfgs['YOLOX-tiny']
    run = Run('RTMDet-tiny', 3, .1, .2, .05, 'epoch_4.pth', 'config.py', 1.)
    (tmp_path / RUN_RECORD).write_text(json.dumps(dict(run=asdict(run), config_sha256=recipe_hash(cfg))))
    assert finished_run(str(tmp_path), cfg) == run
    assert finished_run(str(tmp_path), other) is None  # another config: trained again


@pytest.mark.slow
def test_compare_detectors_runs_end_to_end_on_a_tiny_budget(tmp_path):
    data = tmp_path / 'shapes'
    make_shapes_dataset(str(data), num_train=4, num_val=2, image_size=128)
    work = tmp_path / 'work'
    result = run_tool('compare_detectors', '--detectors', 'RTMDet-GhostNetV3-0.5x', '--epochs', '1', '--batch-size',
                      '2', '--image-size', '128', '--seeds', '0', '--repeats', '1', '--data-root', data,
                      '--work-dir', work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((work / 'compare.json').read_text())
    [run] = summary['runs']
    assert run['checkpoint'].endswith('epoch_1_deploy.pth') and 0 <= run['mAP'] <= 1  # the fused model
    assert set(summary['latency']['RTMDet-GhostNetV3-0.5x']) == {'params_m', 'gmacs', 'eager', 'onnx', 'end_to_end'}
    assert (work / 'compare.png').stat().st_size > 0
    assert '| RTMDet-GhostNetV3-0.5x |' in (work / 'compare.md').read_text()
