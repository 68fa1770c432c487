"""Which compact detector to pick: accuracy on the shapes data against CPU latency, in one command.

    python tools/compare_detectors.py                      # about 1.5 h on 2 CPU cores
    python tools/compare_detectors.py --epochs 1 --seeds 0 --detectors RTMDet-tiny   # a quick look

1. makes the shapes dataset (data/shapes) if needed;
2. trains every detector from scratch under one budget (same images, image size, batch and epochs), each
   with its own recipe's optimizer, augmentation and EMA scaled to the short schedule
   (``ghostdet.apis.compare.short_schedule_config`` says what is scaled), once per seed;
3. evaluates each run's deploy checkpoint (fused by the fuse-on-save hook; the training checkpoint where
   nothing fuses) with tools/test.py: bbox mAP, mAP50, mAP of small objects;
4. times every detector in one interleaved run (fused model in eager PyTorch and in onnxruntime at the
   common image size, and end-to-end on an image: test pipeline, network, NMS);
5. writes <work-dir>/compare.md (the table, the machine), compare.json and compare.png (mAP against
   onnxruntime latency, the Pareto front).
"""
import argparse
import json
import os
import os.path as osp
import tempfile
import time
from dataclasses import asdict

import torch
from mmengine.logging import MMLogger

from ghostdet.apis import fail
from ghostdet.apis.compare import (DETECTORS, NO_MIXUP, Budget, detector_configs, mean_by_name, pareto_front,
                                   plot_front, split_twin, table, train_and_evaluate)
from ghostdet.apis.kd_experiment import DATA_ROOT
from ghostdet.datasets import make_shapes_dataset
from ghostdet.utils.benchmark import Settings, config_subject, measure
from ghostdet.utils.benchmark.report import cpu_name, versions

DEFAULT_DETECTORS = [*DETECTORS, f'RTMDet-GhostNetV3-1.0x{NO_MIXUP}']


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--detectors', nargs='+', default=DEFAULT_DETECTORS,
                        help=f'names from: {", ".join(DETECTORS)}; "NAME{NO_MIXUP}" trains a twin without MixUp')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument('--epochs', type=int, default=Budget.epochs, help='epochs over the train split')
    parser.add_argument('--batch-size', type=int, default=Budget.batch_size)
    parser.add_argument('--image-size', type=int, default=Budget.image_size, help='train and test side (px)')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads for the latency run')
    parser.add_argument('--repeats', type=int, default=15, help='timed calls per detector and form')
    parser.add_argument('--data-root', default=DATA_ROOT, help=f'a shapes dataset (default: {DATA_ROOT}, made if missing)')
    parser.add_argument('--work-dir', default='work_dirs/compare_detectors')
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or args.image_size < 64 or args.image_size % 32:
        parser.error('--epochs and --batch-size must be >= 1, --image-size a multiple of 32 and >= 64')
    return args


def latencies(configs: dict, size: int, threads: int, repeats: int) -> dict:
    """Params, GMACs and median ms of every detector's fused form (eager, onnxruntime, end-to-end)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    MMLogger.get_current_instance().setLevel('ERROR')
    subjects = {name: config_subject(name, cfg) for name, cfg in configs.items()}
    for name, subject in subjects.items():
        subject.name = name
    settings = Settings([(size, size)], threads=threads, repeats=repeats, step_repeats=0, onnx=True,
                        end_to_end=True)
    with tempfile.TemporaryDirectory() as onnx_dir:
        rows = measure(list(subjects.values()), settings, onnx_dir)
    found: dict = {}
    for row in rows:
        entry = found.setdefault(row.model, {})
        if row.form in ('fused', 'plain'):
            entry.update(params_m=row.params_m, gmacs=row.gmacs, eager=row.latency.median)
        elif row.form in ('onnx', 'end-to-end'):
            entry['onnx' if row.form == 'onnx' else 'end_to_end'] = row.latency.median
    return found


def main() -> None:
    args = parse_args()
    if args.data_root == DATA_ROOT:
        make_shapes_dataset(DATA_ROOT)
    elif not osp.isfile(osp.join(args.data_root, 'annotations', 'instances_train.json')):
        fail(f'--data-root {args.data_root} has no annotations/instances_train.json: make a shapes dataset there '
             'with tools/make_shapes_dataset.py')
    with open(osp.join(args.data_root, 'annotations', 'instances_train.json')) as f:
        train_images = len(json.load(f)['images'])
    budget = Budget(args.image_size, args.batch_size, args.epochs)
    iters_per_epoch = -(-train_images // args.batch_size)
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    start = time.time()
    runs = []
    for seed in args.seeds:
        for name, cfg in detector_configs(args.detectors, args.data_root, budget, iters_per_epoch, seed).items():
            folder = name.replace(' ', '_').replace('(', '').replace(')', '')
            runs.append(train_and_evaluate(name, cfg, seed, osp.join(work_dir, f'{folder}_seed{seed}')))
    print('timing every detector in one run', flush=True)
    models = list(dict.fromkeys(split_twin(name)[0] for name in args.detectors))  # a twin times as its model
    configs = detector_configs(models, args.data_root, budget, iters_per_epoch, args.seeds[0])
    timed = latencies(configs, args.image_size, args.threads, args.repeats)
    latency = {name: timed[split_twin(name)[0]] for name in args.detectors}
    means = mean_by_name(runs, 'mAP')
    points = {name: (latency[name]['onnx'], means[name]) for name in means}
    front = pareto_front(points)
    plot_front(points, front, osp.join(work_dir, 'compare.png'),
               f'onnxruntime ms per {args.image_size}x{args.image_size} image ({args.threads} threads)')
    text = '\n'.join([
        f'# Detectors on the shapes data ({time.strftime("%Y-%m-%d %H:%M")}, {time.time() - start:.0f} s)', '',
        f'- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs; {versions()}',
        f'- Budget: {args.epochs} epochs of {iters_per_epoch} iterations, batch {args.batch_size}, '
        f'{args.image_size}x{args.image_size}, from scratch; seeds {args.seeds}; mAP of the deploy checkpoint '
        '(val split)',
        f'- Latency: batch 1 at {args.image_size}x{args.image_size}, {args.threads} threads, median of '
        f'{args.repeats} interleaved calls, fused/plain model; end-to-end = test pipeline + network + NMS '
        'over all candidates (score_thr 0)', '',
        table(runs, latency, front), ''])
    print('\n' + text)
    with open(osp.join(work_dir, 'compare.md'), 'w') as f:
        f.write(text)
    with open(osp.join(work_dir, 'compare.json'), 'w') as f:
        json.dump(dict(runs=[asdict(r) for r in runs], latency=latency, front=front, budget=asdict(budget),
                       iters_per_epoch=iters_per_epoch), f, indent=2)
    print(f'wrote {work_dir}/compare.md, compare.json, compare.png')


if __name__ == '__main__':
    try:
        main()
    except ValueError as error:
        fail(str(error))
