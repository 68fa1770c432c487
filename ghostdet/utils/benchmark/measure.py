"""One benchmark run: every form of every subject analysed (parameters, MACs), then all of them timed
together, and each of ghostdet's rows set against its peers."""
import copy
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ...deploy.onnx import export_onnx, ort_session
from ..analysis import count_params_and_macs
from .subjects import Subject, Variant, build_variants
from .timing import Stats, end_to_end_fn, forward_fn, in_layout, onnx_fn, time_interleaved, train_step_fn

ONNX_LAYOUT = 'ort'
END_TO_END = 'end-to-end'  # the form of a detector's whole inference on an image of the row's size
# Ratio columns: (label, peer role, peer form). A row's ratio = its median / the peer's median at the
# same size and memory format; ``timm`` is the timm GhostNetV3 of the row's width.
LATENCY_REFS = (('R18', 'resnet18', 'plain'), ('MBv2', 'mobilenetv2', 'plain'),
                ('timm-MBv2', 'timm-mobilenetv2', 'plain'), ('timm-train', 'timm', 'train'),
                ('timm-fused', 'timm', 'fused'))
STEP_REFS = (('R18', 'resnet18', 'plain'), ('timm-train', 'timm', 'train'))


@dataclass
class Settings:
    """What to run: input sizes (height, width), memory formats (``default``/``channels_last``),
    threads, untimed and timed calls per model (train steps: none if 0), onnxruntime or not, detectors'
    end-to-end time or not."""
    sizes: Sequence[Tuple[int, int]]
    layouts: Sequence[str] = ('default', )
    threads: int = 2
    warmup: int = 3
    repeats: int = 20
    step_repeats: int = 5
    onnx: bool = False
    end_to_end: bool = False


@dataclass
class Row:
    """One model, form, size and layout: its counts, timings and ratios to its peers."""
    model: str
    form: str
    size: str
    layout: str
    params_m: float
    gmacs: float
    is_peer: bool
    latency: Optional[Stats] = None
    step: Optional[Stats] = None
    ratios: Dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        layout = '' if self.layout == 'default' else f', {self.layout}'
        return f'{self.model} ({self.form}{layout})'


def onnx_session(variant: Variant, size: Tuple[int, int], threads: int, onnx_dir: str) -> Any:
    """Export a fused/plain model for one input size (static shape, as deployed at a fixed size) and
    open an onnxruntime session for it."""
    path = osp.join(onnx_dir, f'{variant.subject.name}_{size[0]}x{size[1]}.onnx')
    export_onnx(variant.model, path, torch.randn(1, 3, *size), static=True)
    return ort_session(path, threads, flush_denormal=True, spin=False)


def trainable_step(key: Tuple, model: torch.nn.Module, x: torch.Tensor) -> Optional[Callable]:
    """The train step of ``model`` on ``x``, or None (with a note) where batch-1 training is impossible:
    a BatchNorm over a 1x1 map has one value per channel (SSDLite's extra layers)."""
    step = train_step_fn(model, x)
    try:
        step()
    except ValueError as error:
        if 'more than 1 value per channel' not in str(error):
            raise
        print(f'note: no train step for {" ".join(key)}: batch 1 leaves a BatchNorm one value per channel')
        return None
    return step


def measure(subjects: Sequence[Subject], settings: Settings, onnx_dir: str) -> List[Row]:
    """Build every form of every subject, analyse it (the train form branch by branch, as it trains),
    then time all of them together; ratios to the peers filled in."""
    rows: Dict[Tuple, Row] = {}
    latency_fns: Dict[Tuple, Callable] = {}
    step_fns: Dict[Tuple, Callable] = {}
    inputs = {(h, w): torch.randn(1, 3, h, w) for h, w in settings.sizes}
    for v in (v for s in subjects for v in build_variants(s)):
        for (h, w), x in inputs.items():
            size = f'{h}x{w}'
            session = onnx_session(v, (h, w), settings.threads, onnx_dir) \
                if settings.onnx and v.form != 'train' else None
            params, macs = count_params_and_macs(v.model, (h, w), branches=v.form == 'train')
            for layout in settings.layouts:
                key = (v.subject.name, v.form, size, layout)
                rows[key] = Row(*key, params / 1e6, macs / 1e9, v.subject.is_peer)
                latency_fns[key] = forward_fn(*in_layout(v.model, x, layout))
                if v.form != 'fused' and settings.step_repeats:
                    step = trainable_step(key, *in_layout(copy.deepcopy(v.model), x, layout))
                    if step is not None:
                        step_fns[key] = step
            if session is not None:
                key = (v.subject.name, 'onnx', size, ONNX_LAYOUT)
                rows[key] = Row(*key, params / 1e6, macs / 1e9, v.subject.is_peer)
                latency_fns[key] = onnx_fn(session, x)
            if settings.end_to_end and v.form != 'train' and v.subject.test_pipeline:
                key = (v.subject.name, END_TO_END, size, 'default')
                rows[key] = Row(*key, params / 1e6, macs / 1e9, v.subject.is_peer)
                latency_fns[key] = end_to_end_fn(v.model, v.subject.test_pipeline, (h, w))
    for key, stats in time_interleaved(latency_fns, settings.warmup, settings.repeats).items():
        rows[key].latency = stats
    for key, stats in time_interleaved(step_fns, settings.warmup, settings.step_repeats).items():
        rows[key].step = stats
    result = list(rows.values())
    add_ratios(result, {s.name: s.refs for s in subjects}, settings.layouts)
    return result


def add_ratios(rows: List[Row], refs_of: Dict[str, Dict[str, str]], layouts: Sequence[str]) -> None:
    """Fill each row's ``lat/<peer>`` and ``step/<peer>`` ratios (its median / the peer's median)."""
    index = {(r.model, r.form, r.size, r.layout): r for r in rows}
    for row in rows:
        refs = refs_of.get(row.model, {})
        layout = row.layout if row.layout in layouts else layouts[0]  # onnxruntime vs eager default
        for prefix, attr, table in (('lat', 'latency', LATENCY_REFS), ('step', 'step', STEP_REFS)):
            for label, role, form in table:
                ref = index.get((refs.get(role), form, row.size, layout))
                mine, theirs = getattr(row, attr), ref and getattr(ref, attr)
                if mine and theirs:
                    row.ratios[f'{prefix}/{label}'] = mine.median / theirs.median
