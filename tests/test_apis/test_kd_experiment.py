"""The shapes KD experiment's pure steps: shortened schedules of the real recipe configs, the step
time, the summary and its table (the subprocess runs: test_detection_pipeline's end-to-end test)."""
import argparse
import os.path as osp

import pytest
from mmengine.config import Config

from ghostdet.apis import add_common_args
from ghostdet.apis.kd_experiment import CONFIGS, REPO, Run, iteration_options, step_time, summarize, table


def shortened(config: str, iters: int) -> Config:
    """The config as tools/train.py reads it with ``--cfg-options`` ``iteration_options``."""
    parser = argparse.ArgumentParser()
    add_common_args(parser)
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.merge_from_dict(parser.parse_args(['--cfg-options', *iteration_options(config, iters)]).cfg_options)
    return cfg


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_iteration_options_end_everything_at_the_last_iteration(name):
    cfg = shortened(CONFIGS[name], 2)
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == 2
    assert cfg.default_hooks.checkpoint.interval == 2 and cfg.default_hooks.logger.interval <= 2
    assert all(scheduler.get('end', 0) <= 2 for scheduler in cfg.param_scheduler)


def test_iteration_options_keep_what_fits_and_nothing_without_iters():
    config = CONFIGS['student']
    original = Config.fromfile(osp.join(REPO, config))
    long = max(scheduler.get('end', 0) for scheduler in original.param_scheduler)
    assert iteration_options(config, None) == []
    options = iteration_options(config, long)
    assert not any(option.startswith('param_scheduler') for option in options)
    assert f'default_hooks.logger.interval={original.default_hooks.logger.interval}' in options


def test_step_time_leaves_out_the_first_window():
    assert step_time([{'time': 9.0}, {'time': 1.0}, {'time': 3.0}, {'loss': 1.0}]) == 2.0
    assert step_time([{'time': 4.0}]) == 4.0
    with pytest.raises(SystemExit, match='logged no iteration time'):
        step_time([{'loss': 1.0}])


def run(name: str, mAP: float, gpu: float = None) -> Run:
    return Run(name, 0, mAP, mAP + 0.2, f'{name}.pth', step_time=0.5 if name == 'student' else 0.75,
               peak_rss_mb=1000. if name == 'student' else 1500., gpu_memory_mb=gpu)


def test_summary_and_table():
    teacher = Run('teacher', None, 0.5, 0.7, 'teacher.pth')
    students, distilled = [run('student', 0.2), run('student', 0.3)], [run('student+KD', 0.4)]
    summary = summarize(teacher, students, distilled)
    assert summary['student_mAP'] == pytest.approx(0.25) and summary['gap_closed'] == pytest.approx(0.6)
    assert summary['step_time_ratio'] == 1.5 and summary['peak_rss_ratio'] == 1.5
    assert 'gpu_memory_ratio' not in summary
    lines = table([teacher, *students, *distilled], summary).splitlines()
    assert lines[2] == '| teacher | config | 0.500 | 0.700 | - | - | - |'
    assert lines[3] == '| student | 0 | 0.200 | 0.400 | 0.500 | 1000 | - |'
    assert lines[-2] == 'teacher 0.500: KD closes 60.0% of the teacher-student gap'
    assert lines[-1] == 'KD step time 1.50x, peak RSS 1.50x of training the student alone'


def test_summary_with_gpu_memory_and_no_gap():
    teacher = Run('teacher', None, 0.1, 0.2, 'teacher.pth')
    summary = summarize(teacher, [run('student', 0.2, gpu=100.)], [run('student+KD', 0.3, gpu=150.)])
    assert summary['gap_closed'] is None and summary['gpu_memory_ratio'] == 1.5
    text = table([teacher], summary)
    assert 'KD closes' not in text and text.endswith(', GPU memory 1.50x of training the student alone')
