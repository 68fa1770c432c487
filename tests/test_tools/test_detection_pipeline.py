"""End to end through the tools, as a user runs them: train, COCO evaluation, deploy evaluation, DDP."""
import json
import re
import sys
from pathlib import Path

import pytest

from ghostdet.apis.kd_experiment import data_options, teacher_run
from ghostdet.testing import run_tool

DEMO_CONFIGS = ['configs/demo/retinanet_ghostnetv3-lite_shapes.py',
                'configs/demo/fcos_ghostnetv3-lite_shapes.py']
MMDET_TRAIN = Path(__import__('mmdet').__file__).parent / '.mim/tools/train.py'
DATA = dict(num_train=8, num_val=4, image_size=256, seed=1)  # the shapes dataset of these runs
QUIET = dict(PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')


def tiny_options(data_root: str, iters: int = 2):
    """Command-line overrides that shrink a demo config to a few iterations on the tiny dataset."""
    return ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'train_dataloader.batch_size=4',
            'default_hooks.logger.interval=1', 'model.test_cfg.score_thr=0.0', *data_options(data_root)]


def run(tool: str, *args) -> str:
    """What the tool printed; it must succeed."""
    result = run_tool(tool, *args, env=QUIET)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def logged_metrics(work_dir: Path) -> dict:
    """The metrics tools/test.py logged (LoggerHook's json of the test run)."""
    logs = sorted(work_dir.glob('*/*.json'))
    assert logs, f'no test log in {work_dir}'
    return json.loads(logs[-1].read_text().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize('config', DEMO_CONFIGS)
def test_train_test_and_deploy_test(tmp_path, shapes_data_root, config):
    work_dir = tmp_path / 'work'
    options = tiny_options(shapes_data_root(**DATA))
    out = run('train', config, '--work-dir', work_dir, *options)
    assert re.search(r'coco/bbox_mAP: \d', out), out[-2000:]
    for name in ('iter_2.pth', 'iter_2_deploy.pth', 'deploy_config.py'):
        assert (work_dir / name).is_file(), name

    results = {}
    for tag, (cfg, ckpt) in {'train': (config, 'iter_2.pth'),
                             'deploy': (work_dir / 'deploy_config.py', 'iter_2_deploy.pth')}.items():
        run('test', cfg, work_dir / ckpt, '--work-dir', tmp_path / tag, '--out', tmp_path / f'{tag}.pkl', *options)
        results[tag] = logged_metrics(tmp_path / tag)
        assert (tmp_path / f'{tag}.pkl').is_file()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        assert results['train'][key] == pytest.approx(results['deploy'][key], abs=1e-3)


@pytest.mark.slow
def test_config_runs_with_mmdets_own_train_py(tmp_path, shapes_data_root):
    work_dir = tmp_path / 'work'
    run(str(MMDET_TRAIN), DEMO_CONFIGS[0], '--work-dir', work_dir, *tiny_options(shapes_data_root(**DATA), iters=1))
    assert (work_dir / 'iter_1_deploy.pth').is_file()


@pytest.mark.slow
def test_two_process_dist_train_on_cpu(tmp_path, shapes_data_root):
    work_dir = tmp_path / 'work'
    result = run_tool('dist_train.sh', DEMO_CONFIGS[0], 2, '--work-dir', work_dir,
                      *tiny_options(shapes_data_root(**DATA)),
                      env=dict(PYTHON=sys.executable, PORT='29517', PYTHONWARNINGS='ignore'))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert 'gloo' in out
    assert (work_dir / 'iter_2.pth').is_file() and (work_dir / 'iter_2_deploy.pth').is_file()


def test_resume_without_checkpoint_says_so(tmp_path):
    result = run_tool('train', DEMO_CONFIGS[0], '--work-dir', tmp_path, '--resume')
    assert result.returncode != 0
    assert 'no checkpoint to resume from' in result.stderr + result.stdout


@pytest.mark.slow
def test_kd_experiment_trains_teacher_and_students_then_reuses_the_teacher(tmp_path, shapes_data_root):
    """tools/kd_experiment.py end to end with 2-iteration runs on a small shapes dataset (--data-root), then
    the teacher's checkpoint reused (what --teacher-checkpoint runs): evaluated, not trained again."""
    data_root = shapes_data_root(**DATA)
    run('kd_experiment', '--work-dir', tmp_path, '--data-root', data_root, '--teacher-iters', 2,
        '--student-iters', 2)
    runs = json.loads((tmp_path / 'summary.json').read_text())['runs']
    assert [r['name'] for r in runs] == ['teacher', 'student', 'student+KD']
    assert all(r['step_time'] > 0 for r in runs)
    assert 'KD step time' in (tmp_path / 'summary.md').read_text()
    reused, checkpoint = teacher_run(str(tmp_path / 'reuse'), runs[0]['checkpoint'], data=data_options(data_root))
    assert checkpoint == runs[0]['checkpoint'] and reused.step_time is None
    assert reused.mAP == runs[0]['mAP']  # the same teacher, evaluated again
