"""Export a fused (deploy) detector to ONNX and check it against PyTorch with onnxruntime.

The graph holds the raw head outputs of ``model._forward`` flattened to named outputs, one per FPN
level: ``cls_score_<l>``, ``bbox_pred_<l>`` (and ``centerness_<l>`` for FCOS), all with dynamic
batch, height and width, so one file serves every input size. Box decoding and NMS stay outside:
MMDetection's ``predict_by_feat`` of the head (or any runtime's own) applies them.

Example::

    python tools/export_onnx.py work_dirs/x/deploy_config.py work_dirs/x/epoch_12_deploy.pth \
        retinanet.onnx --shape 640 640 --verify
"""
import argparse
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor

from ghostdet.apis import fail
from ghostdet.reparam import (HEAD_OUTPUT_NAMES, WeightsMismatchError, build_cpu_model, checkpoint_weights,
                              count_reparam_leaves, deploy_source_config, fuse_model, is_deploy_checkpoint,
                              load_weights, source_weights, to_deploy_config)

OPSET = 17
INPUT_NAME = 'input'
# mmdet dense heads return (scores, boxes[, centerness]) per level; a third group is FCOS's centerness.
OUTPUT_GROUPS = HEAD_OUTPUT_NAMES + ('centerness', )
DYNAMIC_AXES = {0: 'batch', 2: 'height', 3: 'width'}
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


# ---------------------------------------------------------------------------------------------------
# Export and onnxruntime
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def export(model: nn.Module, path: str, sample: Tensor) -> List[str]:
    """Export ``model`` (eval mode) with dynamic batch/height/width; return the output names.

    TorchScript exporter (``dynamo=False``): it records the shape arithmetic of
    ``F.interpolate(size=x.shape[-2:])`` (DFC attention) as graph ops, so sizes follow the input.
    """
    model.eval()
    names = output_names(model(sample))
    dynamic_axes = {name: dict(DYNAMIC_AXES) for name in [INPUT_NAME, *names]}
    torch.onnx.export(
        FlatOutputs(model), (sample, ), path, input_names=[INPUT_NAME], output_names=names,
        dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return names


def ort_session(path: str, threads: int = 1) -> Any:
    """An onnxruntime CPU session with a fixed number of intra-op threads, ops run sequentially."""
    try:
        import onnxruntime as ort
    except ImportError:
        fail('onnxruntime is not installed: pip install onnx onnxruntime')
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


@dataclass
class OutputDiff:
    """Largest difference of one output; ``rel`` is relative to the PyTorch output's largest value."""
    shape: Tuple[int, ...]
    name: str
    abs: float
    rel: float


@torch.no_grad()
def compare_with_onnxruntime(model: nn.Module, session: Any, shapes: Sequence[Tuple[int, ...]],
                             seed: int = 0) -> List[OutputDiff]:
    """Run PyTorch and onnxruntime on the same random inputs of each (N, C, H, W) shape."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    names = [o.name for o in session.get_outputs()]
    diffs = []
    for shape in shapes:
        inputs = torch.randn(*shape, generator=generator)
        expected = flatten_outputs(model(inputs))
        actual = session.run(None, {INPUT_NAME: inputs.numpy()})
        for name, ref, out in zip(names, expected, actual):
            if tuple(ref.shape) != out.shape:
                raise AssertionError(f'{name}: onnxruntime shape {out.shape} != PyTorch {tuple(ref.shape)} '
                                     f'at input {tuple(shape)}')
            ref = ref.numpy()
            abs_diff = float(np.abs(ref - out).max())
            diffs.append(OutputDiff(tuple(shape), name, abs_diff, abs_diff / max(float(np.abs(ref).max()), 1e-12)))
    return diffs


def verify_shapes(height: int, width: int) -> List[Tuple[int, int, int, int]]:
    """The export shape (batch 1) and a different, non-square one (batch 2): checks that batch,
    height and width are all dynamic."""
    other = (max(64, round(height * 0.75 / 32) * 32), max(64, round(width * 0.5 / 32) * 32))
    if other == (height, width):
        other = (height + 32, width)
    return [(1, 3, height, width), (2, 3, *other)]


# ---------------------------------------------------------------------------------------------------
# Model loading
# ---------------------------------------------------------------------------------------------------
def load_fused_model(config_path: str, checkpoint_path: str) -> nn.Module:
    """The fused detector of a config + checkpoint (CPU, eval mode).

    A deploy checkpoint loads into the deploy form of the config. A training checkpoint with its
    training config is fused here in memory (and says so); a training checkpoint with a deploy
    config cannot be loaded and is refused.
    """
    for what, path in (('config', config_path), ('checkpoint', checkpoint_path)):
        if not osp.isfile(path):
            fail(f'{what} file {path} does not exist')
    cfg = Config.fromfile(config_path)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    checkpoint = CheckpointLoader.load_checkpoint(checkpoint_path, map_location='cpu')
    deploy_model = build_cpu_model(to_deploy_config(cfg).model)
    if is_deploy_checkpoint(checkpoint, deploy_model):
        _load(deploy_model, checkpoint.get('state_dict', checkpoint), checkpoint_path)
        return deploy_model
    source_model = build_cpu_model(deploy_source_config(cfg))
    if count_reparam_leaves(source_model) == 0:
        fail(f'{checkpoint_path} is a training (unfused) checkpoint but {config_path} builds the fused '
             'model: fuse first with tools/reparameterize.py, or pass the training config (this tool '
             'then fuses in memory)')
    _load(source_model, source_weights(checkpoint_weights(checkpoint), cfg), checkpoint_path)
    num_fused = fuse_model(source_model)
    print(f'note: {checkpoint_path} is a training checkpoint; fused {num_fused} re-parameterizable '
          'blocks in memory (tools/reparameterize.py writes the deploy checkpoint once)')
    return source_model


def _load(model: nn.Module, state_dict: dict, source: str) -> None:
    try:
        load_weights(model, state_dict, source)
    except (WeightsMismatchError, ValueError) as err:
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
    names = export(model, args.out, torch.randn(1, 3, *args.shape))
    print(f'wrote {args.out}: input {INPUT_NAME} (N, 3, H, W), outputs {", ".join(names)} '
          f'(opset {OPSET}, dynamic batch/height/width)')
    if not args.verify:
        return
    diffs = compare_with_onnxruntime(model, ort_session(args.out), verify_shapes(*args.shape))
    for d in diffs:
        print(f'  {str(d.shape):18s} {d.name:16s} max abs {d.abs:.2e}  rel {d.rel:.2e}')
    worst = max(min(d.abs, d.rel) for d in diffs)
    if worst > args.tolerance:
        sys.exit(f'error: onnxruntime differs from PyTorch by {worst:.2e} > {args.tolerance:.0e}')
    print(f'verified: onnxruntime matches PyTorch within {worst:.2e} (tolerance {args.tolerance:.0e})')


if __name__ == '__main__':
    main()
