"""Measure GhostNetV3 backbones and detectors against peers on the CPU, all in one run.

Per model, form and input size: parameters and MACs (as tools/get_flops.py counts them), batch-1 latency
(median, p10/p90 after warm-up) and the training step (forward + backward of the sum of all outputs,
train mode). Forms: ``train`` (re-parameterizable branches, timed in eval mode), ``fused`` (branches
folded), ``plain`` (nothing to fuse), ``onnx`` (the fused or plain model in onnxruntime, ``--onnx``),
``end-to-end`` (a detector's whole inference on an image of the size, NMS included, ``--end-to-end``).
Peers: mmdet's ResNet-18 and MobileNetV2-1.0x, timm's MobileNetV2-1.0x features and timm's GhostNetV3
of the same width (train form, and fused by ``timm.utils.reparameterize_model``), all run to the same
four stage ends (strides 4/8/16/32). Calls of all models are interleaved round by round, so a change of
machine load hits every model alike (see ``ghostdet.utils.benchmark``).

Writes ``benchmark.csv``, ``benchmark.md`` and ``benchmark.png`` into ``--out-dir``. Example::

    python tools/benchmark.py --backbones ghostnetv3-0.5x ghostnetv3-1.0x --sizes 640x640 --threads 2
    python tools/benchmark.py --backbones --peers --onnx --end-to-end --step-repeats 0 \
        --configs configs/retinanet_ghostnetv3_coco.py mmdet::retinanet/retinanet_r18_fpn_1x_coco.py
"""
import argparse
import os
import os.path as osp
import re
import tempfile
import time
from typing import Optional, Sequence, Tuple

import torch
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

import ghostdet  # noqa: F401  registers GhostNetV3
from ghostdet.apis import fail, read_config
from ghostdet.utils.benchmark import (MEMORY_FORMATS, PEERS, Settings, backbone_subjects, config_subject,
                                      measure, write_report)


def parse_size(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r'(\d+)x(\d+)', text)
    if match is None or min(map(int, match.groups())) < 32:
        raise argparse.ArgumentTypeError(f'size must be HxW with H, W >= 32, e.g. 640x640; got {text!r}')
    return int(match.group(1)), int(match.group(2))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='CPU benchmark of GhostNetV3 backbones/detectors and peers')
    parser.add_argument('--backbones', nargs='*', default=['ghostnetv3-0.5x', 'ghostnetv3-1.0x'],
                        help='ghostdet backbones as ghostnetv3-<width>x (none: only --configs)')
    parser.add_argument('--configs', nargs='*', default=[], help='detector configs (mmdet:: paths work)')
    parser.add_argument('--peers', nargs='*', default=list(PEERS), choices=PEERS,
                        help='peer backbones measured in the same run (timm: same width as each backbone)')
    parser.add_argument('--sizes', nargs='+', type=parse_size, default=[(640, 640)], metavar='HxW',
                        help='input sizes, height x width, batch 1')
    parser.add_argument('--memory-formats', nargs='+', default=['default'], choices=list(MEMORY_FORMATS),
                        help='default: models as built, NCHW input; channels_last: every model and input '
                        'converted')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads (torch and onnxruntime)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed calls per model before timing')
    parser.add_argument('--repeats', type=int, default=20, help='timed inference calls per model')
    parser.add_argument('--step-repeats', type=int, default=5, help='timed train steps (0: none). A batch-1 train step '
                        'of GhostNetV3 needs inputs of 128 px or more (BN over the DFC-pooled stride-64 map)')
    parser.add_argument('--onnx', action='store_true', help='also time the fused models in onnxruntime')
    parser.add_argument('--end-to-end', action='store_true',
                        help='also time each --configs detector on an image of each size: its test pipeline '
                        '(resize/pad to its own input size), preprocessing, network, decoding and NMS')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    args = parser.parse_args(argv)
    if not args.backbones and not args.configs:
        parser.error('nothing to measure: give --backbones and/or --configs')
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.step_repeats < 0:
        parser.error('--threads and --repeats must be >= 1, --warmup and --step-repeats >= 0')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # Randomly initialised nets produce denormal floats that trained ones rarely do; on x86 they
    # slow some models (timm's GhostNetV3 train step: 20x) and would decide the comparison.
    torch.set_flush_denormal(True)
    MMLogger.get_current_instance().setLevel('ERROR')  # the analysis warns per unsupported op
    init_default_scope('mmdet')
    try:
        subjects = backbone_subjects(args.backbones, args.peers) if args.backbones else []
    except ValueError as error:
        fail(str(error))
    subjects += [config_subject(path, read_config(path)) for path in args.configs]
    settings = Settings(args.sizes, args.memory_formats, args.threads, args.warmup, args.repeats,
                        args.step_repeats, args.onnx, args.end_to_end)
    os.makedirs(args.out_dir, exist_ok=True)
    load_before, start = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory() as onnx_dir:
        rows = measure(subjects, settings, onnx_dir)
    out = osp.join(args.out_dir, 'benchmark')
    print(write_report(rows, out, settings, (load_before, os.getloadavg()), time.perf_counter() - start))
    print(f'wrote {out}.csv, {out}.md, {out}.png')


if __name__ == '__main__':
    main()
