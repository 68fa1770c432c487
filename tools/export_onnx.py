"""Export a fused (deploy) detector to ONNX and check it against PyTorch with onnxruntime.

By default the graph holds the raw head outputs of ``model._forward`` flattened to named outputs, one
per FPN level: ``cls_score_<l>``, ``bbox_pred_<l>`` (and ``score_factor_<l>``: FCOS centerness, YOLOX
objectness), all with dynamic batch, height and width, so one file serves every input size
(``--static``: fixed to ``--shape``, faster in onnxruntime); box decoding and NMS stay outside (e.g. the
head's ``predict_by_feat``). ``--with-nms`` appends decoding and class-wise NMS instead (one image per
call, outputs ``dets`` (K, 5: x1, y1, x2, y2, score) and ``labels`` (K, )).

The input is the preprocessed image: the config's ``data_preprocessor`` (mean/std, channel order,
padding to a multiple of 32) is not part of the graph. The logic is in :mod:`ghostdet.deploy.onnx`.

Example::

    python tools/export_onnx.py work_dirs/x/deploy_config.py work_dirs/x/epoch_12_deploy.pth \
        retinanet.onnx --shape 640 640 --verify
"""
import argparse
from typing import Optional, Sequence

import torch
from mmengine.registry import init_default_scope

from ghostdet.apis import fail, read_config
from ghostdet.deploy import format_diffs, load_fused_model, read_checkpoint
from ghostdet.deploy.onnx import (INPUT_NAME, OPSET, compare_with_onnxruntime, export_onnx, onnx_module,
                                  ort_session, verify_shapes)
from ghostdet.safe_load import UnsafeCheckpointError

DEFAULT_TOLERANCE = 1e-4


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export a fused detector (raw head outputs) to ONNX')
    parser.add_argument('config', help='deploy config (or the training config: the model is then fused)')
    parser.add_argument('checkpoint', help='deploy checkpoint (<name>_deploy.pth) or training checkpoint')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--shape', type=int, nargs=2, default=(640, 640), metavar=('H', 'W'),
                        help='input size traced at export (the graph accepts any size)')
    parser.add_argument('--static', action='store_true',
                        help='fix the input to --shape (batch 1): faster in onnxruntime on CPUs (the DFC gate '
                        'upsamples in its blocked layout); the file then takes that shape only')
    parser.add_argument('--with-nms', action='store_true',
                        help='append box decoding and class-wise NMS (one image per call; outputs dets, labels)')
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch at two input sizes and batch sizes')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                        help='largest allowed difference per output, absolute or relative to the output '
                        'range (whichever is smaller); --verify exits non-zero above it')
    args = parser.parse_args(argv)
    if min(args.shape) < 32:
        parser.error(f'--shape must be at least 32x32, got {args.shape}')
    return args


def export(args: argparse.Namespace) -> None:
    if not args.out.endswith('.onnx'):
        fail(f'output file must end with .onnx, got {args.out}')
    cfg = read_config(args.config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model, num_fused = load_fused_model(cfg, read_checkpoint(args.checkpoint), args.checkpoint)
    if num_fused:
        print(f'note: {args.checkpoint} is a training checkpoint; fused {num_fused} re-parameterizable '
              'blocks in memory (tools/reparameterize.py writes the deploy checkpoint once)')
    names = export_onnx(model, args.out, torch.randn(1, 3, *args.shape), args.with_nms, args.static)
    dynamic = 'height/width' if args.with_nms else 'batch/height/width'
    shape = f'static (1, 3, {args.shape[0]}, {args.shape[1]})' if args.static else f'dynamic {dynamic}'
    print(f'wrote {args.out}: input {INPUT_NAME} (N, 3, H, W), outputs {", ".join(names)} '
          f'(opset {OPSET}, {shape})')
    if not args.verify:
        return
    shapes = verify_shapes(*args.shape, batch=1 if args.with_nms else 2, static=args.static)
    diffs = compare_with_onnxruntime(onnx_module(model, args.with_nms), ort_session(args.out), shapes)
    print(format_diffs(diffs))
    worst = max(min(d.abs, d.rel) for d in diffs)
    if worst > args.tolerance:
        fail(f'onnxruntime differs from PyTorch by {worst:.2e} > {args.tolerance:.0e}')
    print(f'verified: onnxruntime matches PyTorch within {worst:.2e} (tolerance {args.tolerance:.0e})')


def main(argv: Optional[Sequence[str]] = None) -> None:
    try:
        export(parse_args(argv))
    except (FileNotFoundError, ImportError, UnsafeCheckpointError, ValueError) as err:
        fail(str(err))  # a missing file or onnxruntime, weights of another model, an unsupported head


if __name__ == '__main__':
    main()
