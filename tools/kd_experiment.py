"""The shapes knowledge-distillation experiment, in one command:

    python tools/kd_experiment.py

1. makes the shapes dataset (data/shapes) if needed;
2. trains the teacher (configs/distill/shapes/retinanet_ghostnetv3-1.0x_shapes_teacher.py);
3. trains the student alone and the student with KD, same schedule, data and seed, once per seed;
4. evaluates the final checkpoint of each with tools/test.py and prints a table: bbox mAP and mAP50,
   the part of the teacher-student gap that KD closes, the step time (median of the logged training
   iterations) and peak memory (process RSS; GPU memory as logged when training on a GPU) of each
   run, and the KD overheads. The table and the raw numbers are written to <work-dir>/summary.md/.json.

About 25 minutes on 2 CPU cores with one seed (teacher 11, each student 3-5 minutes). Options:
``--seeds 0 1`` (two seeds, reported with their mean), ``--teacher-checkpoint`` (reuse a trained
teacher), ``--kd-cfg-options`` (e.g. ``model.distill_losses.loss_logit_kd=None`` for PKD only), and
``--teacher-iters``/``--student-iters`` (shorter runs, e.g. to check the pipeline: 2 and 2).
"""
import argparse
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

from ghostdet.datasets import make_shapes_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/kd_shapes', help='one sub-folder per run')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='student seeds (the teacher: its config\'s)')
    parser.add_argument('--teacher-checkpoint', help='a trained teacher (skips training the teacher)')
    parser.add_argument('--kd-cfg-options', nargs='+', default=[], help='extra key=value for the KD run')
    parser.add_argument('--teacher-iters', type=int, help='override the teacher\'s iterations')
    parser.add_argument('--student-iters', type=int, help='override both students\' iterations')
    return parser.parse_args()


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


def run(command: Sequence[str], log_file: str) -> float:
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
        raise SystemExit(
            f'error: {command[0]} failed (exit {process.returncode}); end of {log_file}:\n{tail}')
    return usage.ru_maxrss / 1024  # Linux: KiB


def newest(pattern: str) -> str:
    """The latest of the files a run wrote (a work dir keeps one folder per run)."""
    return max(glob.glob(pattern), key=osp.getmtime)


def train(config: str, work_dir: str, options: Sequence[str]) -> Dict[str, object]:
    """Train; return the final checkpoint, peak RSS and the logged training scalars."""
    command = ['tools/train.py', config, '--work-dir', work_dir]
    if options:
        command += ['--cfg-options', *options]
    peak_rss = run(command, osp.join(work_dir, 'train.out'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    scalars = newest(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        rows = [json.loads(line) for line in f]
    return dict(checkpoint=checkpoint, peak_rss=peak_rss, rows=[r for r in rows if 'loss' in r])


def evaluate(config: str, checkpoint: str, work_dir: str, options: Sequence[str]) -> Dict[str, float]:
    """bbox mAP and mAP50 of ``checkpoint`` with tools/test.py."""
    test_dir = osp.join(work_dir, 'test')
    command = ['tools/test.py', config, checkpoint, '--work-dir', test_dir]
    if options:
        command += ['--cfg-options', *options]
    run(command, osp.join(work_dir, 'test.out'))
    result = newest(osp.join(test_dir, '*', '*.json'))
    with open(result) as f:
        metrics = json.load(f)
    if not all(key in metrics for key in METRICS):  # CocoMetric reports nothing without detections
        print('  no detections: mAP 0', flush=True)
    return {key: float(metrics.get(key, 0.)) for key in METRICS}


def step_time(rows: List[dict]) -> float:
    """Median logged iteration time, without the first logged window (start-up) when there are more."""
    times = [row['time'] for row in rows if 'time' in row]
    if not times:
        raise SystemExit('error: the training logged no iteration time (LoggerHook interval > iterations?)')
    return statistics.median(times[1:] if len(times) > 1 else times)


def train_and_evaluate(name: str, seed: Optional[int], config: str, work_dir: str, options: List[str]) -> Run:
    print(f'[{name}, seed {seed}] {config}', flush=True)
    trained = train(config, work_dir, options)
    model_options = [o for o in options if o.startswith('model.')]  # e.g. the teacher checkpoint
    metrics = evaluate(config, trained['checkpoint'], work_dir, model_options)
    gpu = [row['memory'] for row in trained['rows'] if 'memory' in row]
    result = Run(name, seed, metrics[METRICS[0]], metrics[METRICS[1]], trained['checkpoint'],
                 step_time(trained['rows']), trained['peak_rss'], max(gpu) if gpu else None)
    print(f'  mAP {result.mAP:.3f}, mAP50 {result.mAP50:.3f}, {result.step_time:.2f} s/iter', flush=True)
    return result


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


def teacher_run(args: argparse.Namespace, work_dir: str) -> Tuple[Run, str]:
    """Train the teacher (unless given) and evaluate it; return it and its checkpoint."""
    config, teacher_dir = CONFIGS['teacher'], osp.join(work_dir, 'teacher')
    if args.teacher_checkpoint is None:
        result = train_and_evaluate('teacher', None, config, teacher_dir,
                                    iteration_options(config, args.teacher_iters))
        return result, result.checkpoint
    if not osp.isfile(args.teacher_checkpoint):
        raise SystemExit(f'error: --teacher-checkpoint {args.teacher_checkpoint} does not exist')
    checkpoint = osp.abspath(args.teacher_checkpoint)
    print(f'[teacher] {checkpoint}', flush=True)
    metrics = evaluate(config, checkpoint, teacher_dir, [])
    return Run('teacher', None, metrics[METRICS[0]], metrics[METRICS[1]], checkpoint), checkpoint


def main() -> None:
    args = parse_args()
    make_shapes_dataset(osp.join(REPO, 'data', 'shapes'))  # the data root of the shapes configs
    work_dir = osp.abspath(args.work_dir)
    teacher, teacher_checkpoint = teacher_run(args, work_dir)
    student_options = iteration_options(CONFIGS['student'], args.student_iters)
    students, distilled = [], []
    for seed in args.seeds:
        seeded = student_options + [f'randomness.seed={seed}']
        students.append(train_and_evaluate('student', seed, CONFIGS['student'],
                                           osp.join(work_dir, f'student_seed{seed}'), seeded))
        kd_options = seeded + [f'model.teacher_checkpoint={teacher_checkpoint}', *args.kd_cfg_options]
        distilled.append(train_and_evaluate('student+KD', seed, CONFIGS['kd'],
                                            osp.join(work_dir, f'kd_seed{seed}'), kd_options))
    runs = [teacher] + students + distilled
    summary = summarize(teacher, students, distilled)
    text = table(runs, summary)
    print('\n' + text)
    with open(osp.join(work_dir, 'summary.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(dict(runs=[asdict(r) for r in runs], summary=summary, kd_cfg_options=args.kd_cfg_options),
                  f, indent=2)


if __name__ == '__main__':
    main()
