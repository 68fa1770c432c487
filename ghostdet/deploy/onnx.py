"""ONNX export of a fused detector and its comparison with PyTorch under onnxruntime.

By default the graph holds the raw head outputs of ``model._forward`` flattened to named outputs, one
per FPN level (:func:`~ghostdet.deploy.verify.output_names`), all with dynamic batch, height and width,
so one file serves every input size; box decoding and NMS stay outside. ``with_nms`` appends decoding
and class-wise NMS instead (one image per call, outputs ``dets`` (K, 5) and ``labels`` (K, )).
The input is the preprocessed image: the config's ``data_preprocessor`` is not part of the graph.
"""
import warnings
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.onnx.operators
from torch import Tensor
from torchvision.ops import batched_nms

from .nchwc import padded_for_nchwc
from .verify import OutputDiff, flatten_outputs, output_names

OPSET = 17
INPUT_NAME = 'input'
DYNAMIC_AXES = {0: 'batch', 2: 'height', 3: 'width'}
DETECTION_NAMES = ('dets', 'labels')

__all__ = ['OPSET', 'INPUT_NAME', 'DETECTION_NAMES', 'FlatOutputs', 'DetectionOutputs', 'onnx_module',
           'export_onnx', 'ort_session', 'pair_detections', 'compare_with_onnxruntime', 'verify_shapes',
           'flatten_outputs', 'output_names']


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
            raise ValueError('--with-nms needs a single-stage dense head with sigmoid scores (e.g. RetinaNet, '
                             'FCOS); export without it for the raw head outputs')
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


def onnx_module(model: nn.Module, with_nms: bool = False) -> nn.Module:
    """What the ONNX graph computes: raw outputs as a flat tuple, or detections. In eval mode: the exporter
    restores the wrapper's mode on the way out, and a fresh module's train mode would reach the model."""
    return (DetectionOutputs(model) if with_nms else FlatOutputs(model)).eval()


@torch.no_grad()
def export_onnx(model: nn.Module, path: str, sample: Tensor, with_nms: bool = False,
                static: bool = False) -> List[str]:
    """Export ``model`` (eval mode) with dynamic height/width (and batch, without NMS), or fixed to the
    sample's shape (``static``); return the output names.

    TorchScript exporter (``dynamo=False``): it records the shape arithmetic of
    ``F.interpolate(size=x.shape[-2:])`` (DFC attention) and of the prior grids as graph ops, so
    sizes follow the input. A static graph has them as constants, so onnxruntime runs the DFC gate's
    upsampling in its blocked layout too. A fused GhostNetV3 backbone is exported channel-padded for
    that layout (:func:`~ghostdet.deploy.nchwc.padded_for_nchwc`, a copy; same outputs).
    """
    model.eval()
    if with_nms:
        names = list(DETECTION_NAMES)
        dynamic_axes = {INPUT_NAME: {2: 'height', 3: 'width'}, **{n: {0: 'num_dets'} for n in names}}
    else:
        names = output_names(model(sample))
        dynamic_axes = {name: dict(DYNAMIC_AXES) for name in [INPUT_NAME, *names]}
    model = padded_for_nchwc(model) or model
    with warnings.catch_warnings():  # the deprecation notice of the TorchScript exporter, chosen here
        warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export')
        torch.onnx.export(
            onnx_module(model, with_nms), (sample, ), path, input_names=[INPUT_NAME], output_names=names,
            dynamic_axes=None if static else dynamic_axes, opset_version=OPSET, do_constant_folding=True,
            dynamo=False)
    return names


def ort_session(path: str, threads: int = 1, flush_denormal: bool = False, spin: bool = True) -> Any:
    """An onnxruntime CPU session with a fixed number of intra-op threads, ops run sequentially
    (``flush_denormal``: treat denormal floats as zero, as ``torch.set_flush_denormal`` does; ``spin=False``:
    its threads sleep between calls instead of spinning, so that models timed in turn do not compete
    with the spinning threads of the one before)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError('onnxruntime is not installed: pip install onnx onnxruntime') from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if flush_denormal:
        options.add_session_config_entry('session.set_denormal_as_zero', '1')
    if not spin:
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


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
        diffs.extend(OutputDiff.between(shape, name, ref, out) for name, ref, out in zip(names, expected, actual))
    return diffs


def verify_shapes(height: int, width: int, batch: int = 2, static: bool = False) -> List[Tuple[int, int, int, int]]:
    """The export shape (batch 1) and a different, non-square one (``batch``): checks that the
    dynamic axes are dynamic. A static export: the export shape only."""
    if static:
        return [(1, 3, height, width)]
    other = (max(64, round(height * 0.75 / 32) * 32), max(64, round(width * 0.5 / 32) * 32))
    if other == (height, width):
        other = (height + 32, width)
    return [(1, 3, height, width), (batch, 3, *other)]
