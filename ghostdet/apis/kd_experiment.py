"""The steps of the shapes knowledge-distillation experiment (``tools/kd_experiment.py``).

Every run trains and evaluates through ``tools/train.py`` and ``tools/test.py`` in a process of its
own, so that its peak memory is its own; the experiment therefore runs in a checkout of this
repository (its tools, configs and data folder).
"""
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ghostdet.utils.logs import read_scalars, training_records
from .runner_setup import fail

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA_ROOT = osp.join(REPO, 'data', 'shapes')  # the data root of the shapes configs
RECIPE = osp.join('configs', 'distill', 'shapes')
CONFIGS = dict(
    teacher=osp.join(RECIPE, 'retinanet_ghostnetv3-1.0x_shapes_teacher.py'),
    student=osp.join(RECIPE, 'retinanet_ghostnetv3-0.5x_shapes.py'),
    kd=osp.join(RECIPE, 'kd_retinanet_ghostnetv3-0.5x_shapes.py'))
METRICS = ('coco/bbox_mAP', 'coco/bbox_mAP_50')


@dataclass
class Run:
    """One evaluated model and, when trained here, its training cost."""
    name: str
    seed: Optional[int]  # None: the config's
    mAP: float
    mAP50: float
    checkpoint: str
    step_time: Optional[float] = None  # seconds, median of the logged training iterations
    peak_rss_mb: Optional[float] = None
    gpu_memory_mb: Optional[float] = None


def iteration_options(config: str, iters: Optional[int]) -> List[str]:
    """--cfg-options shortening an iteration-based config to ``iters`` (validation and a checkpoint
    at the end, schedulers ending there, at least one logged iteration)."""
    if iters is None:
        return []
    cfg = Config.fromfile(osp.join(REPO, config))
    log_interval = min(cfg.default_hooks.logger.get('interval', 10), iters)
    options = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
               f'default_hooks.checkpoint.interval={iters}', f'default_hooks.logger.interval={log_interval}']
    for i, scheduler in enumerate(cfg.get('param_scheduler') or []):
        if scheduler.get('end', 0) > iters:
            options.append(f'param_scheduler.{i}.end={iters}')
    return options


def data_options(data_root: Optional[str]) -> List[str]:
    """--cfg-options pointing the shapes configs at another shapes dataset (None: their ``data/shapes``)."""
    if data_root is None:
        return []
    root = osp.abspath(data_root).rstrip('/') + '/'
    annotations = f'{root}annotations/instances_val.json'
    return [*(f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader',
                                                                  'test_dataloader')),
            f'val_evaluator.ann_file={annotations}', f'test_evaluator.ann_file={annotations}']


def run_tool(command: Sequence[str], log_file: str) -> float:
    """Run a tool of this repo, its output to ``log_file``; return its peak RSS in MiB."""
    print(f'  $ {" ".join(command)}', flush=True)
    os.makedirs(osp.dirname(log_file), exist_ok=True)
    with open(log_file, 'w') as log:
        process = subprocess.Popen([sys.executable, *command], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED='1'))
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        with open(log_file) as log:
            tail = ''.join(log.readlines()[-30:])
        fail(f'{command[0]} failed (exit {process.returncode}); end of {log_file}:\n{tail}')
    return usage.ru_maxrss / 1024  # Linux: KiB


def train(config: str, work_dir: str, options: Sequence[str]) -> Dict[str, object]:
    """Train; return the final checkpoint, peak RSS and the logged training records."""
    command = ['tools/train.py', config, '--work-dir', work_dir]
    if options:
        command += ['--cfg-options', *options]
    peak_rss = run_tool(command, osp.join(work_dir, 'train.out'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return dict(checkpoint=checkpoint, peak_rss=peak_rss, rows=training_records(read_scalars(work_dir)))


def evaluate(config: str, checkpoint: str, work_dir: str, options: Sequence[str],
             keys: Sequence[str] = METRICS) -> Dict[str, float]:
    """The COCO metrics ``keys`` (default: bbox mAP and mAP50) of ``checkpoint`` with tools/test.py."""
    test_dir = osp.join(work_dir, 'test')
    command = ['tools/test.py', config, checkpoint, '--work-dir', test_dir]
    if options:
        command += ['--cfg-options', *options]
    run_tool(command, osp.join(work_dir, 'test.out'))
    result = max(glob.glob(osp.join(test_dir, '*', '*.json')), key=osp.getmtime)  # this run's metrics
    with open(result) as f:
        metrics = json.load(f)
    if not all(key in metrics for key in keys):  # CocoMetric reports nothing without detections
        print('  no detections: mAP 0', flush=True)
    return {key: float(metrics.get(key, 0.)) for key in keys}


def step_time(rows: List[dict]) -> float:
    """Median logged iteration time, without the first logged window (start-up) when there are more."""
    times = [row['time'] for row in rows if 'time' in row]
    if not times:
        fail('the training logged no iteration time (LoggerHook interval > iterations?)')
    return statistics.median(times[1:] if len(times) > 1 else times)


def train_and_evaluate(name: str, seed: Optional[int], config: str, work_dir: str, options: List[str],
                       data: Sequence[str] = ()) -> Run:
    print(f'[{name}, seed {seed}] {config}', flush=True)
    trained = train(config, work_dir, [*options, *data])
    model_options = [o for o in options if o.startswith('model.')]  # e.g. the teacher checkpoint
    metrics = evaluate(config, trained['checkpoint'], work_dir, [*model_options, *data])
    gpu = [row['memory'] for row in trained['rows'] if 'memory' in row]
    result = Run(name, seed, metrics[METRICS[0]], metrics[METRICS[1]], trained['checkpoint'],
                 step_time(trained['rows']), trained['peak_rss'], max(gpu) if gpu else None)
    print(f'  mAP {result.mAP:.3f}, mAP50 {result.mAP50:.3f}, {result.step_time:.2f} s/iter', flush=True)
    return result


def teacher_run(work_dir: str, checkpoint: Optional[str] = None, iters: Optional[int] = None,
                data: Sequence[str] = ()) -> Tuple[Run, str]:
    """Train the teacher (unless its ``checkpoint`` is given) and evaluate it; return it and its checkpoint.
    ``data``: :func:`data_options`."""
    config, teacher_dir = CONFIGS['teacher'], osp.join(work_dir, 'teacher')
    if checkpoint is None:
        result = train_and_evaluate('teacher', None, config, teacher_dir, iteration_options(config, iters), data)
        return result, result.checkpoint
    if not osp.isfile(checkpoint):
        fail(f'--teacher-checkpoint {checkpoint} does not exist')
    checkpoint = osp.abspath(checkpoint)
    print(f'[teacher] {checkpoint}', flush=True)
    metrics = evaluate(config, checkpoint, teacher_dir, list(data))
    return Run('teacher', None, metrics[METRICS[0]], metrics[METRICS[1]], checkpoint), checkpoint


def student_runs(work_dir: str, seeds: Sequence[int], teacher_checkpoint: str, iters: Optional[int] = None,
                 kd_options: Sequence[str] = (), data: Sequence[str] = ()) -> Tuple[List[Run], List[Run]]:
    """The student alone and the student with KD, same schedule, data and seed, once per seed."""
    options = iteration_options(CONFIGS['student'], iters)
    students, distilled = [], []
    for seed in seeds:
        seeded = options + [f'randomness.seed={seed}']
        students.append(train_and_evaluate('student', seed, CONFIGS['student'],
                                           osp.join(work_dir, f'student_seed{seed}'), seeded, data))
        with_teacher = seeded + [f'model.teacher_checkpoint={teacher_checkpoint}', *kd_options]
        distilled.append(train_and_evaluate('student+KD', seed, CONFIGS['kd'],
                                            osp.join(work_dir, f'kd_seed{seed}'), with_teacher, data))
    return students, distilled


def mean(runs: List[Run], field: str) -> float:
    return statistics.mean(getattr(r, field) for r in runs)


def summarize(teacher: Run, students: List[Run], distilled: List[Run]) -> Dict[str, object]:
    """Means over seeds, the part of the gap KD closes and its overheads."""
    summary: Dict[str, object] = dict(
        student_mAP=mean(students, 'mAP'), kd_mAP=mean(distilled, 'mAP'),
        student_mAP50=mean(students, 'mAP50'), kd_mAP50=mean(distilled, 'mAP50'),
        step_time_ratio=mean(distilled, 'step_time') / mean(students, 'step_time'),
        peak_rss_ratio=mean(distilled, 'peak_rss_mb') / mean(students, 'peak_rss_mb'))
    if all(r.gpu_memory_mb for r in students + distilled):
        summary['gpu_memory_ratio'] = mean(distilled, 'gpu_memory_mb') / mean(students, 'gpu_memory_mb')
    gap = teacher.mAP - summary['student_mAP']
    summary['teacher_mAP'] = teacher.mAP
    summary['gap_closed'] = (summary['kd_mAP'] - summary['student_mAP']) / gap if gap > 0 else None
    return summary


def _format(value: Optional[float], spec: str) -> str:
    return '-' if value is None else format(value, spec)


def table(runs: List[Run], summary: Dict[str, object]) -> str:
    """A markdown table of the runs and the summary's sentences under it."""
    lines = ['| model | seed | bbox mAP | mAP50 | step time (s) | peak RSS (MiB) | GPU memory (MiB) |',
             '|---|---|---|---|---|---|---|']
    for r in runs:
        seed = 'config' if r.seed is None else r.seed
        lines.append(f'| {r.name} | {seed} | {r.mAP:.3f} | {r.mAP50:.3f} | {_format(r.step_time, ".3f")} | '
                     f'{_format(r.peak_rss_mb, ".0f")} | {_format(r.gpu_memory_mb, ".0f")} |')
    lines.append('')
    lines.append(f"student {summary['student_mAP']:.3f} -> student+KD {summary['kd_mAP']:.3f} bbox mAP "
                 f"(mAP50 {summary['student_mAP50']:.3f} -> {summary['kd_mAP50']:.3f}), mean over seeds")
    if summary['gap_closed'] is not None:
        lines.append(f"teacher {summary['teacher_mAP']:.3f}: KD closes {100 * summary['gap_closed']:.1f}% of "
                     'the teacher-student gap')
    overheads = f"KD step time {summary['step_time_ratio']:.2f}x, peak RSS {summary['peak_rss_ratio']:.2f}x"
    if 'gpu_memory_ratio' in summary:
        overheads += f", GPU memory {summary['gpu_memory_ratio']:.2f}x"
    lines.append(overheads + ' of training the student alone')
    return '\n'.join(lines)


def write_summary(work_dir: str, text: str, runs: List[Run], summary: Dict[str, object],
                  kd_options: Sequence[str]) -> None:
    """``summary.md`` (the table) and ``summary.json`` (the raw numbers) in ``work_dir``."""
    with open(osp.join(work_dir, 'summary.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(dict(runs=[asdict(r) for r in runs], summary=summary, kd_cfg_options=list(kd_options)),
                  f, indent=2)
