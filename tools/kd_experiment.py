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
``--teacher-iters``/``--student-iters`` (shorter runs, e.g. to check the pipeline: 2 and 2) and
``--data-root`` (another shapes dataset, made with tools/make_shapes_dataset.py).
"""
import argparse
import os.path as osp

from ghostdet.apis import fail
from ghostdet.apis.kd_experiment import (DATA_ROOT, data_options, student_runs, summarize, table, teacher_run,
                                         write_summary)
from ghostdet.datasets import make_shapes_dataset


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
    parser.add_argument('--data-root', help=f'a shapes dataset (default: {DATA_ROOT}, made if missing)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.data_root is None:
        make_shapes_dataset(DATA_ROOT)
    elif not osp.isfile(osp.join(args.data_root, 'annotations', 'instances_val.json')):
        fail(f'--data-root {args.data_root} has no annotations/instances_val.json: make a shapes dataset there '
             'with tools/make_shapes_dataset.py')
    data = data_options(args.data_root)
    work_dir = osp.abspath(args.work_dir)
    teacher, teacher_checkpoint = teacher_run(work_dir, args.teacher_checkpoint, args.teacher_iters, data)
    students, distilled = student_runs(work_dir, args.seeds, teacher_checkpoint, args.student_iters,
                                       args.kd_cfg_options, data)
    runs = [teacher] + students + distilled
    summary = summarize(teacher, students, distilled)
    text = table(runs, summary)
    print('\n' + text)
    write_summary(work_dir, text, runs, summary, args.kd_cfg_options)


if __name__ == '__main__':
    main()
