"""Compare a model's outputs with a reference's: one naming of the outputs, one difference type.

Used for the fused model against the unfused one (``tools/reparameterize.py --verify``) and for
onnxruntime against PyTorch (:mod:`ghostdet.deploy.onnx`).
"""
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

# mmdet dense heads return (scores, boxes[, score factors]) per level; a third group is FCOS's centerness.
OUTPUT_GROUPS = ('cls_score', 'bbox_pred', 'score_factor')  # mmdet's name for FCOS centerness, YOLOX objectness


def flatten_outputs(outputs: Any) -> List[Tensor]:
    """All tensors of a (nested) tuple/list of outputs, in order."""
    if isinstance(outputs, Tensor):
        return [outputs]
    return [t for item in outputs for t in flatten_outputs(item)]


def output_names(outputs: Any) -> List[str]:
    """Names for :func:`flatten_outputs`, valid as ONNX names: ``cls_score_0, ..., bbox_pred_0, ...``
    for a head's per-level lists, ``output_<i>`` for a flat tuple (e.g. backbone stages)."""
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


@dataclass
class OutputDiff:
    """Largest difference of one output at one input shape; ``rel`` is relative to the reference's
    largest value."""
    input_shape: Tuple[int, ...]
    name: str
    abs: float
    rel: float

    @classmethod
    def between(cls, input_shape: Sequence[int], name: str, expected: np.ndarray,
                actual: np.ndarray) -> 'OutputDiff':
        abs_diff = float(np.abs(expected - actual).max(initial=0))
        scale = max(float(np.abs(expected).max(initial=0)), 1e-12)
        return cls(tuple(input_shape), name, abs_diff, abs_diff / scale)


def format_diffs(diffs: Sequence[OutputDiff]) -> str:
    """A table with one row per input shape and output."""
    rows = [f'{"input (n x h x w)":<20}{"output":<16}{"max abs diff":>14}{"max rel diff":>14}']
    for d in diffs:
        n, _, h, w = d.input_shape
        rows.append(f'{f"{n} x {h} x {w}":<20}{d.name:<16}{d.abs:>14.3e}{d.rel:>14.3e}')
    return '\n'.join(rows)


def _branch_forward(module: nn.Module, x: Tensor) -> Tensor:
    return module.act(module.forward_branches(x))


@contextmanager
def branch_by_branch(model: nn.Module) -> Iterator[None]:
    """Run blocks that offer ``forward_branches`` (ghostdet's ``RepConvBN``) branch by branch in eval
    mode too, where they fuse on the fly: a fused model must be checked against the sum of the
    branches, not against the same fusion. Blocks already fused have no branches and run as they are."""
    blocks = [m for m in model.modules()
              if callable(getattr(m, 'forward_branches', None)) and not getattr(m, 'deploy', False)]
    for block in blocks:
        block.forward = partial(_branch_forward, block)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


def _named_outputs(outputs: Any) -> List[Tuple[str, np.ndarray]]:
    return list(zip(output_names(outputs), (t.cpu().numpy() for t in flatten_outputs(outputs))))


@torch.no_grad()
def compare_outputs(reference: nn.Module, candidate: nn.Module, sizes: Sequence[Tuple[int, int]],
                    seed: int = 0) -> List[OutputDiff]:
    """Run both models' ``_forward`` (eval mode; the reference's re-parameterizable blocks branch by
    branch) on the reference's device, on the same random image of each (height, width); return the
    largest absolute and relative difference of every output tensor."""
    reference.eval()
    candidate.eval()
    generator = torch.Generator().manual_seed(seed)
    diffs = []
    for size in sizes:
        inputs = torch.randn(1, 3, *size, generator=generator).to(next(reference.parameters()).device)
        with branch_by_branch(reference):
            expected = _named_outputs(reference._forward(inputs))
        actual = _named_outputs(candidate._forward(inputs))
        if [(n, t.shape) for n, t in expected] != [(n, t.shape) for n, t in actual]:
            raise ValueError(f'The models give differently shaped outputs at input size {tuple(size)}')
        diffs.extend(OutputDiff.between(inputs.shape, name, a, b) for (name, a), (_, b) in zip(expected, actual))
    return diffs
