"""Export a fused (deploy) detector to ONNX and check it against PyTorch with onnxruntime.

By default the graph holds the raw head outputs of ``model._forward`` flattened to named outputs, one
per FPN level: ``cls_score_<l>``, ``bbox_pred_<l>`` (and ``centerness_<l>`` for FCOS), all with dynamic
batch, height and width, so one file serves every input size; box decoding and NMS stay outside
(e.g. the head's ``predict_by_feat``). ``--with-nms`` appends decoding and class-wise NMS instead
(one image per call, outputs ``dets`` (K, 5: x1, y1, x2, y2, score) and ``labels`` (K, )).

The input is the preprocessed image: the config's ``data_preprocessor`` (mean/std, channel order,
padding to a multiple of 32) is not part of the graph.

Example::

    python tools/export_onnx.py work_dirs/x/deploy_config.py work_dirs/x/epoch_12_deploy.pth \
        retinanet.onnx --shape 640 640 --verify
"""
import argparse
import os.path as osp
import sys
import warnings
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.onnx.operators
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint
from torch import Tensor
from torchvision.ops import batched_nms

from ghostdet.apis import fail, read_config, require_checkpoint
from ghostdet.reparam import (HEAD_OUTPUT_NAMES, build_cpu_model, checkpoint_weights,
                              deploy_source_config, fuse_model, is_deploy_checkpoint,
                              load_weights, source_weights, to_deploy_config, weights_mismatch)
from ghostdet.safe_load import UnsafeCheckpointError

OPSET = 17
INPUT_NAME = 'input'
# mmdet dense heads return (scores, boxes[, centerness]) per level; a third group is FCOS's centerness.
OUTPUT_GROUPS = HEAD_OUTPUT_NAMES + ('centerness', )
DYNAMIC_AXES = {0: 'batch', 2: 'height', 3: 'width'}
DETECTION_NAMES = ('dets', 'labels')
DEFAULT_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------------
# Output flattening (shared with tools/benchmark.py)
# ---------------------------------------------------------------------------------------------------
def flatten_outputs(outputs: Any) -> List[Tensor]:
    """All tensors of a (nested) tuple/list of outputs, in order."""
    if isinstance(outputs, Tensor):
        return [outputs]
    return [t for item in outputs for t in flatten_outputs(item)]


def output_names(outputs: Any) -> List[str]:
    """Names for :func:`flatten_outputs`: ``cls_score_0, ..., bbox_pred_0, ...`` for a head's
    per-level lists, ``output_<i>`` for a flat tuple (e.g. backbone stages)."""
    if isinstance(outputs, Tensor):
        return ['output']
    names = []
    for i, item in enumerate(outputs):
        if isinstance(item, Tensor):
            names.append(f'output_{i}')
        else:
            group = OUTPUT_GROUPS[i] if i < len(OUTPUT_GROUPS) else f'output{i}'
            names.extend(f'{group}_{level}' for level in range(len(item)))
    return names


class FlatOutputs(nn.Module):
    """``model(x)`` (a detector's tensor mode = ``_forward``) as a flat tuple of tensors, the form
    the ONNX exporter and runtimes take."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        return tuple(flatten_outputs(self.model(x)))


class DetectionOutputs(nn.Module):
    """Detections of one image from the raw head outputs, as MMDetection's dense-head
    ``predict_by_feat`` computes them with the head's own prior generator, box coder and ``test_cfg``:
    sigmoid scores, ``score_thr``, ``nms_pre`` top-k, decoding clipped to the image, score factors
    (FCOS centerness), ``min_bbox_size``, class-wise NMS, ``max_per_img``.

    One difference: the ``nms_pre`` top-k is taken over all levels together, not per level (a
    per-level ``min(nms_pre, candidates)`` is a data-dependent size the traced graph cannot hold).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        head = getattr(model, 'bbox_head', None)
        if not all(hasattr(head, a) for a in ('prior_generator', 'bbox_coder', 'test_cfg')) \
                or not getattr(head, 'use_sigmoid_cls', False):
            fail('--with-nms needs a single-stage dense head with sigmoid scores (e.g. RetinaNet, FCOS); '
                 'export without it for the raw head outputs')
        self.model = model
        self.head = head
        cfg = head.test_cfg
        self.nms_pre = cfg.get('nms_pre', 1000)
        self.score_thr = cfg.get('score_thr', 0.)
        self.min_bbox_size = cfg.get('min_bbox_size', -1)
        self.iou_threshold = cfg.nms.iou_threshold
        self.max_per_img = cfg.get('max_per_img', 100)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        outputs = self.model(x)
        cls_scores, bbox_preds = outputs[:2]
        priors = torch.cat(self.head.prior_generator.grid_priors(
            [c.shape[-2:] for c in cls_scores], dtype=x.dtype, device=x.device))
        num_classes = self.head.cls_out_channels
        scores = torch.cat([c[0].permute(1, 2, 0).reshape(-1, num_classes) for c in cls_scores]).sigmoid()
        deltas = torch.cat([b[0].permute(1, 2, 0).reshape(-1, self.head.bbox_coder.encode_size)
                            for b in bbox_preds])
        # Pad with -1 so that small inputs still have nms_pre candidates; score_thr >= 0 drops them.
        flat = torch.cat([scores.reshape(-1), scores.new_full((self.nms_pre, ), -1.)])
        top_scores, top_idxs = flat.topk(self.nms_pre)
        valid = top_scores > max(self.score_thr, 0.)
        top_scores, top_idxs = top_scores[valid], top_idxs[valid]
        prior_idxs, labels = torch.div(top_idxs, num_classes, rounding_mode='floor'), top_idxs % num_classes
        boxes = self.head.bbox_coder.decode(priors[prior_idxs], deltas[prior_idxs])
        height_width = torch.onnx.operators.shape_as_tensor(x)[2:].to(boxes.dtype)
        boxes = torch.min(boxes.clamp(min=0), height_width.flip(0).repeat(2))
        if len(outputs) > 2:  # score factors (FCOS centerness)
            factors = torch.cat([f[0].permute(1, 2, 0).reshape(-1) for f in outputs[2]]).sigmoid()
            top_scores = top_scores * factors[prior_idxs]
        if self.min_bbox_size >= 0:
            sizes = boxes[:, 2:] - boxes[:, :2]
            large = (sizes > self.min_bbox_size).all(dim=1)
            boxes, top_scores, labels = boxes[large], top_scores[large], labels[large]
        keep = batched_nms(boxes, top_scores, labels, self.iou_threshold)[:self.max_per_img]
        return torch.cat([boxes[keep], top_scores[keep].unsqueeze(1)], dim=1), labels[keep]


# ---------------------------------------------------------------------------------------------------
# Export and onnxruntime
# ---------------------------------------------------------------------------------------------------
def onnx_module(model: nn.Module, with_nms: bool = False) -> nn.Module:
    """What the ONNX graph computes: raw outputs as a flat tuple, or detections."""
    return DetectionOutputs(model) if with_nms else FlatOutputs(model)


@torch.no_grad()
def export(model: nn.Module, path: str, sample: Tensor, with_nms: bool = False) -> List[str]:
    """Export ``model`` (eval mode) with dynamic height/width (and batch, without NMS); return the
    output names.

    TorchScript exporter (``dynamo=False``): it records the shape arithmetic of
    ``F.interpolate(size=x.shape[-2:])`` (DFC attention) and of the prior grids as graph ops, so
    sizes follow the input.
    """
    model.eval()
    if with_nms:
        names = list(DETECTION_NAMES)
        dynamic_axes = {INPUT_NAME: {2: 'height', 3: 'width'}, **{n: {0: 'num_dets'} for n in names}}
    else:
        names = output_names(model(sample))
        dynamic_axes = {name: dict(DYNAMIC_AXES) for name in [INPUT_NAME, *names]}
    with warnings.catch_warnings():  # the deprecation notice of the TorchScript exporter, chosen here
        warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export')
        torch.onnx.export(
            onnx_module(model, with_nms), (sample, ), path, input_names=[INPUT_NAME], output_names=names,
            dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return names


def ort_session(path: str, threads: int = 1, flush_denormal: bool = False) -> Any:
    """An onnxruntime CPU session with a fixed number of intra-op threads, ops run sequentially
    (``flush_denormal``: treat denormal floats as zero, as ``torch.set_flush_denormal`` does)."""
    try:
        import onnxruntime as ort
    except ImportError:
        fail('onnxruntime is not installed: pip install onnx onnxruntime')
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if flush_denormal:
        options.add_session_config_entry('session.set_denormal_as_zero', '1')
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


@dataclass
class OutputDiff:
    """Largest difference of one output; ``rel`` is relative to the PyTorch output's largest value."""
    shape: Tuple[int, ...]
    name: str
    abs: float
    rel: float


def pair_detections(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> List[np.ndarray]:
    """``actual`` (dets, labels) reordered to pair each expected detection with the closest one of
    its class: detections of nearly equal score may come out of NMS in either order."""
    (dets, labels), (out_dets, out_labels) = expected, actual
    cost = np.abs(dets[:, None, :] - out_dets[None, :, :]).max(-1, initial=0)
    cost[labels[:, None] != out_labels[None, :]] = np.inf
    order = cost.argmin(1) if cost.size else np.zeros(0, dtype=int)
    return [out_dets[order], out_labels[order]]


@torch.no_grad()
def compare_with_onnxruntime(module: nn.Module, session: Any, shapes: Sequence[Tuple[int, ...]],
                             seed: int = 0) -> List[OutputDiff]:
    """Run the PyTorch module that was exported (:func:`onnx_module`) and onnxruntime on the same
    random inputs of each (N, C, H, W) shape."""
    module.eval()
    generator = torch.Generator().manual_seed(seed)
    names = [o.name for o in session.get_outputs()]
    diffs = []
    for shape in shapes:
        inputs = torch.randn(*shape, generator=generator)
        expected = [t.numpy() for t in module(inputs)]
        actual = session.run(None, {INPUT_NAME: inputs.numpy()})
        for name, ref, out in zip(names, expected, actual):
            if ref.shape != out.shape:
                raise ValueError(f'{name}: onnxruntime shape {out.shape} != PyTorch {ref.shape} '
                                 f'at input {tuple(shape)}')
        if tuple(names) == DETECTION_NAMES:
            actual = pair_detections(expected, actual)
        for name, ref, out in zip(names, expected, actual):
            abs_diff = float(np.abs(ref - out).max(initial=0))
            scale = max(float(np.abs(ref).max(initial=0)), 1e-12)
            diffs.append(OutputDiff(tuple(shape), name, abs_diff, abs_diff / scale))
    return diffs


def verify_shapes(height: int, width: int, batch: int = 2) -> List[Tuple[int, int, int, int]]:
    """The export shape (batch 1) and a different, non-square one (``batch``): checks that the
    dynamic axes are dynamic."""
    other = (max(64, round(height * 0.75 / 32) * 32), max(64, round(width * 0.5 / 32) * 32))
    if other == (height, width):
        other = (height + 32, width)
    return [(1, 3, height, width), (batch, 3, *other)]


# ---------------------------------------------------------------------------------------------------
# Model loading
# ---------------------------------------------------------------------------------------------------
def load_fused_model(config_path: str, checkpoint_path: str) -> nn.Module:
    """The fused detector of a config + checkpoint (CPU, eval mode).

    A deploy checkpoint loads into the deploy form of the config. A training checkpoint with its
    training config is fused here in memory (and says so); a training checkpoint with a deploy
    config cannot be loaded and is refused.
    """
    require_checkpoint(checkpoint_path, 'CHECKPOINT')
    cfg = read_config(config_path)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    try:
        checkpoint = _load_checkpoint(checkpoint_path, map_location='cpu')
    except UnsafeCheckpointError as err:
        fail(str(err))
    deploy_model = build_cpu_model(to_deploy_config(cfg).model)
    if is_deploy_checkpoint(checkpoint, deploy_model):
        _load(deploy_model, checkpoint.get('state_dict', checkpoint), checkpoint_path)
        return deploy_model
    source_model = build_cpu_model(deploy_source_config(cfg))
    if source_model.state_dict().keys() == deploy_model.state_dict().keys():  # config already fused
        problems = '\n  '.join(weights_mismatch(deploy_model, checkpoint.get('state_dict', checkpoint)))
        fail(f'{checkpoint_path} does not fit the fused model of {config_path}:\n  {problems}\n'
             'For a training checkpoint: fuse first with tools/reparameterize.py, or pass the training '
             'config (this tool then fuses in memory).')
    _load(source_model, source_weights(checkpoint_weights(checkpoint), cfg), checkpoint_path)
    num_fused = fuse_model(source_model)
    print(f'note: {checkpoint_path} is a training checkpoint; fused {num_fused} re-parameterizable '
          'blocks in memory (tools/reparameterize.py writes the deploy checkpoint once)')
    return source_model


def _load(model: nn.Module, state_dict: dict, source: str) -> None:
    try:
        load_weights(model, state_dict, source)
    except ValueError as err:  # WeightsMismatchError, or the backbone refusing the other form
        fail(str(err))


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export a fused detector (raw head outputs) to ONNX')
    parser.add_argument('config', help='deploy config (or the training config: the model is then fused)')
    parser.add_argument('checkpoint', help='deploy checkpoint (<name>_deploy.pth) or training checkpoint')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--shape', type=int, nargs=2, default=(640, 640), metavar=('H', 'W'),
                        help='input size traced at export (the graph accepts any size)')
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


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if not args.out.endswith('.onnx'):
        fail(f'output file must end with .onnx, got {args.out}')
    model = load_fused_model(args.config, args.checkpoint)
    names = export(model, args.out, torch.randn(1, 3, *args.shape), args.with_nms)
    dynamic = 'height/width' if args.with_nms else 'batch/height/width'
    print(f'wrote {args.out}: input {INPUT_NAME} (N, 3, H, W), outputs {", ".join(names)} '
          f'(opset {OPSET}, dynamic {dynamic})')
    if not args.verify:
        return
    shapes = verify_shapes(*args.shape, batch=1 if args.with_nms else 2)
    try:
        diffs = compare_with_onnxruntime(onnx_module(model, args.with_nms), ort_session(args.out), shapes)
    except ValueError as err:
        sys.exit(f'error: {err}')
    for d in diffs:
        print(f'  {str(d.shape):18s} {d.name:16s} max abs {d.abs:.2e}  rel {d.rel:.2e}')
    worst = max(min(d.abs, d.rel) for d in diffs)
    if worst > args.tolerance:
        sys.exit(f'error: onnxruntime differs from PyTorch by {worst:.2e} > {args.tolerance:.0e}')
    print(f'verified: onnxruntime matches PyTorch within {worst:.2e} (tolerance {args.tolerance:.0e})')

if __name__ == '__main__':
    main()
