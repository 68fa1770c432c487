"""Measure GhostNetV3 backbones and detectors against peers on the CPU, all in one run.

Per model, form and input size: parameters and MACs (MMEngine's ``get_model_complexity_info``),
batch-1 latency (median, p10/p90 after warm-up) and the training step (forward + backward of the
sum of all outputs, train mode). Forms: ``train`` (re-parameterizable branches, measured in eval
mode), ``fused`` (branches folded), ``plain`` (nothing to fuse), ``onnx`` (the fused or plain model
in onnxruntime, ``--onnx``). Peers: mmdet's ResNet-18 and MobileNetV2-1.0x, timm's MobileNetV2-1.0x
features and timm's GhostNetV3 of the same width (its default form = train form, and fused by ``timm.utils.reparameterize_model``),
all run to the same four stage ends (strides 4/8/16/32). Calls of all models are interleaved round
by round, so a change of machine load hits every model alike.

Writes ``benchmark.csv``, ``benchmark.md`` and ``benchmark.png`` into ``--out-dir``. Example::

    python tools/benchmark.py --backbones ghostnetv3-0.5x ghostnetv3-1.0x --sizes 640x640 --threads 2
    python tools/benchmark.py --backbones --peers --onnx --configs configs/retinanet_ghostnetv3_coco.py \
        mmdet::retinanet/retinanet_r18_fpn_1x_coco.py
"""
import argparse
import copy
import csv
import importlib.util
import os
import os.path as osp
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.analysis import get_model_complexity_info
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

from mmdet.registry import MODELS

import ghostdet  # noqa: F401  registers GhostNetV3
from ghostdet.apis import fail, read_config
from ghostdet.models import GhostNetV3
from ghostdet.models.layers import cpu_kernels
from ghostdet.reparam import deploy_source_config, fuse_model

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from export_onnx import INPUT_NAME, export, flatten_outputs, ort_session  # noqa: E402

STAGE_ENDS = (1, 2, 3, 4)  # GhostNetV3 out_indices: strides 4/8/16/32
MOBILENETV2_STAGE_ENDS = (1, 2, 4, 6)  # mmdet MobileNetV2 layers ending at strides 4/8/16/32
TIMM_STAGE_END_BLOCKS = (2, 4, 6, 8)  # timm GhostNet blocks ending at strides 4/8/16/32
PEERS = ('resnet18', 'mobilenetv2', 'timm-mobilenetv2', 'timm')
TIMM_MOBILENETV2 = 'mobilenetv2_100'  # features_only, out_indices (1, 2, 3, 4): strides 4/8/16/32
# Ratio columns: (label, peer role, peer form). A row's ratio = its median / the peer's median at the
# same size and memory format; ``timm`` is the timm GhostNetV3 of the row's width.
LATENCY_REFS = (('R18', 'resnet18', 'plain'), ('MBv2', 'mobilenetv2', 'plain'),
                ('timm-MBv2', 'timm-mobilenetv2', 'plain'), ('timm-train', 'timm', 'train'),
                ('timm-fused', 'timm', 'fused'))
STEP_REFS = (('R18', 'resnet18', 'plain'), ('timm-train', 'timm', 'train'))
MEMORY_FORMATS = {'default': torch.contiguous_format, 'channels_last': torch.channels_last}
ONNX_LAYOUT = 'ort'
OUT_NAME = 'benchmark'


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------
@dataclass
class Subject:
    """A model to measure: how to build its train form, how to fuse a copy (None: nothing to fuse),
    and its peers by role (``resnet18``/``mobilenetv2``/``timm`` -> subject name)."""
    name: str
    build: Callable[[], nn.Module]
    fuse: Callable[[nn.Module], Optional[nn.Module]]
    is_peer: bool = False
    refs: Dict[str, str] = field(default_factory=dict)


def fuse_copy(model: nn.Module) -> Optional[nn.Module]:
    """ghostdet's fusion (any module with ``switch_to_deploy``) on a copy; None if nothing fused."""
    fused = copy.deepcopy(model)
    return fused if fuse_model(fused) else None


def timm_fuse_copy(model: nn.Module) -> nn.Module:
    from timm.utils.model import reparameterize_model
    return reparameterize_model(model)


class TimmStageEnds(nn.Module):
    """timm's GhostNet run to the same four stage ends as ghostdet's backbone (stem, blocks[0..8]);
    timm's ``features_only`` taps other points (the first block of each stride instead)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(net.conv_stem, net.bn1, net.act1)
        self.blocks = net.blocks[:TIMM_STAGE_END_BLOCKS[-1] + 1]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in TIMM_STAGE_END_BLOCKS:
                outs.append(x)
        return tuple(outs)


def width_of(name: str) -> Optional[float]:
    match = re.fullmatch(r'ghostnetv3-(\d*\.?\d+)x', name)
    return float(match.group(1)) if match else None


def width_tag(width: float) -> str:
    """0.5 -> '0.5x', 1 -> '1.0x', 0.75 -> '0.75x'."""
    return f'{width:.1f}x' if round(width, 1) == width else f'{width:g}x'


def timm_ghostnet_name(width: float) -> Optional[str]:
    """timm's model name for a width (``ghostnetv3_100``), None without timm or that width."""
    try:
        import timm
    except ImportError:
        return None
    name = f'ghostnetv3_{round(width * 100):03d}'
    return name if name in timm.list_models('ghostnetv3_*') else None


def ghostnet_subject(width: float) -> Subject:
    return Subject(f'ghostnetv3-{width_tag(width)}',
                   lambda: GhostNetV3(widen_factor=width, out_indices=STAGE_ENDS), fuse_copy)


def timm_subject(width: float) -> Optional[Subject]:
    timm_name = timm_ghostnet_name(width)
    if timm_name is None:
        return None

    def build() -> nn.Module:
        import timm
        return TimmStageEnds(timm.create_model(timm_name))

    return Subject(f'timm-ghostnetv3-{width_tag(width)}', build, timm_fuse_copy, is_peer=True)


def timm_mobilenetv2_subject() -> Optional[Subject]:
    """timm's MobileNetV2-1.0x features to strides 4/8/16/32 (the issue's latency reference), None
    without timm."""
    if importlib.util.find_spec('timm') is None:
        return None

    def build() -> nn.Module:
        import timm
        return timm.create_model(TIMM_MOBILENETV2, features_only=True, out_indices=(1, 2, 3, 4))

    return Subject('timm-mobilenetv2-1.0x', build, fuse_copy, is_peer=True)


def mmdet_subject(name: str, cfg: dict) -> Subject:
    return Subject(name, lambda: MODELS.build(copy.deepcopy(cfg)), fuse_copy, is_peer=True)


def peer_subjects(roles: Sequence[str], widths: Sequence[float]) -> Dict[Tuple[str, Optional[float]], Subject]:
    """The requested peers keyed by (role, width); width is None for width-independent peers."""
    peers: Dict[Tuple[str, Optional[float]], Subject] = {}
    if 'resnet18' in roles:
        peers['resnet18', None] = mmdet_subject('resnet18', dict(
            type='ResNet', depth=18, out_indices=(0, 1, 2, 3), norm_eval=False))
    if 'mobilenetv2' in roles:
        peers['mobilenetv2', None] = mmdet_subject('mobilenetv2-1.0x', dict(
            type='MobileNetV2', widen_factor=1.0, out_indices=MOBILENETV2_STAGE_ENDS))
    if 'timm-mobilenetv2' in roles:
        subject = timm_mobilenetv2_subject()
        if subject is None:
            print('warning: no timm MobileNetV2 (timm missing)')
        else:
            peers['timm-mobilenetv2', None] = subject
    for width in widths if 'timm' in roles else ():
        subject = timm_subject(width)
        if subject is None:
            print(f'warning: no timm GhostNetV3 of width {width} (timm missing or width unpublished)')
        else:
            peers['timm', width] = subject
    return peers


def backbone_subjects(names: Sequence[str], roles: Sequence[str]) -> List[Subject]:
    """``ghostnetv3-<w>x`` backbones, then their peers, with each backbone's ``refs`` filled in."""
    widths = []
    for name in names:
        width = width_of(name)
        if width is None:
            fail(f'unknown backbone {name!r}: use ghostnetv3-<width>x, e.g. ghostnetv3-1.0x')
        widths.append(width)
    peers = peer_subjects(roles, widths)
    ours = []
    for width in widths:
        subject = ghostnet_subject(width)
        subject.refs = {role: peer.name for (role, w), peer in peers.items() if w in (None, width)}
        ours.append(subject)
    unique_peers = {p.name: p for p in peers.values()}
    return ours + list(unique_peers.values())


def config_subject(path: str) -> Subject:
    """A detector from a config file (``mmdet::`` paths too); a distiller gives its student."""
    cfg = read_config(path)
    model_cfg = deploy_source_config(cfg)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    name = osp.splitext(osp.basename(path))[0]
    return Subject(name, lambda: MODELS.build(copy.deepcopy(model_cfg)), fuse_copy)


@dataclass
class Variant:
    """One form of one subject, in eval mode."""
    subject: Subject
    form: str
    model: nn.Module


def build_variants(subject: Subject) -> List[Variant]:
    """``train`` + ``fused`` forms, or ``plain`` when there is nothing to fuse."""
    model = subject.build()
    model.eval()  # not chained: mmdet's MobileNetV2.train() returns None
    fused = subject.fuse(model)
    if fused is None:
        return [Variant(subject, 'plain', model)]
    fused.eval()
    return [Variant(subject, 'train', model), Variant(subject, 'fused', fused)]


# ---------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Milliseconds per call."""
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> 'Stats':
        p10, median, p90 = np.percentile(np.asarray(seconds) * 1e3, [10, 50, 90])
        return cls(float(median), float(p10), float(p90))


def time_interleaved(fns: Dict[Hashable, Callable[[], object]], warmup: int,
                     repeats: int) -> Dict[Hashable, Stats]:
    """Time every function ``repeats`` times after ``warmup`` calls, round-robin over functions
    (the one timer behind every number of this tool)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    seconds: Dict[Hashable, List[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[key].append(time.perf_counter() - start)
    return {key: Stats.of(s) for key, s in seconds.items()}


def forward_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(x)
    return run


def train_step_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Forward + backward of the sum of all outputs (train mode, gradients reset each step)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def run() -> object:
        for p in params:
            p.grad = None
        loss = sum(t.float().sum() for t in flatten_outputs(model(x)))
        loss.backward()
        return loss
    return run


def onnx_fn(session, x: torch.Tensor) -> Callable[[], object]:
    array = x.numpy()
    return lambda: session.run(None, {INPUT_NAME: array})


def in_layout(model: nn.Module, x: torch.Tensor, layout: str) -> Tuple[nn.Module, torch.Tensor]:
    """A copy of the model and the input in a memory format (``default``: as built, NCHW input)."""
    if layout == 'default':
        return model, x
    memory_format = MEMORY_FORMATS[layout]
    return copy.deepcopy(model).to(memory_format=memory_format), x.contiguous(memory_format=memory_format)


def complexity(model: nn.Module, x: torch.Tensor) -> Tuple[float, float]:
    """(parameters, MACs) by MMEngine's analysis, which counts one multiply-add as one "flop"."""
    info = get_model_complexity_info(model, inputs=(x, ), show_table=False, show_arch=False)
    return float(info['params']), float(info['flops'])


def parse_size(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r'(\d+)x(\d+)', text)
    if match is None or min(map(int, match.groups())) < 32:
        raise argparse.ArgumentTypeError(f'size must be HxW with H, W >= 32, e.g. 640x640; got {text!r}')
    return int(match.group(1)), int(match.group(2))


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------
@dataclass
class Row:
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


def ratio_columns(rows: List[Row]) -> List[str]:
    present = {key for r in rows for key in r.ratios}
    return [f'{m}/{label}' for m, table in (('lat', LATENCY_REFS), ('step', STEP_REFS))
            for label, _, _ in table if f'{m}/{label}' in present]


def _ms(stats: Optional[Stats]) -> Tuple[str, str]:
    return ('', '') if stats is None else (f'{stats.median:.1f}', f'{stats.p10:.1f}-{stats.p90:.1f}')


def table_rows(rows: List[Row]) -> Tuple[List[str], List[List[str]]]:
    ratio_cols = ratio_columns(rows)
    header = ['model', 'form', 'size', 'layout', 'params (M)', 'GMACs', 'latency ms', 'p10-p90',
              'train step ms', 'p10-p90', *ratio_cols]
    body = [[r.model, r.form, r.size, r.layout, f'{r.params_m:.2f}', f'{r.gmacs:.2f}', *_ms(r.latency),
             *_ms(r.step), *(f'{r.ratios[c]:.2f}' if c in r.ratios else '' for c in ratio_cols)]
            for r in rows]
    return header, body


def markdown_table(header: List[str], body: List[List[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    line = lambda cells: '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths)) + ' |'  # noqa: E731
    return '\n'.join([line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|', *map(line, body)])


def write_csv(rows: List[Row], path: str) -> None:
    ratio_cols = ratio_columns(rows)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['model', 'form', 'size', 'layout', 'params', 'macs', 'latency_ms_median',
                         'latency_ms_p10', 'latency_ms_p90', 'step_ms_median', 'step_ms_p10', 'step_ms_p90',
                         *ratio_cols])
        for r in rows:
            stats = [v for s in (r.latency, r.step)
                     for v in ((s.median, s.p10, s.p90) if s else ('', '', ''))]
            writer.writerow([r.model, r.form, r.size, r.layout, round(r.params_m * 1e6), round(r.gmacs * 1e9),
                             *stats, *(r.ratios.get(c, '') for c in ratio_cols)])


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def versions() -> str:
    found = [f'torch {torch.__version__}']
    for module in ('mmdet', 'mmengine', 'timm', 'onnxruntime'):
        try:
            found.append(f'{module} {__import__(module).__version__}')
        except ImportError:
            pass
    return ', '.join(found)


def kernels_path() -> str:
    """Whether ghostdet's C++ CPU kernels ran (depthwise train blocks, ghost modules at inference) or the
    PyTorch modules."""
    if cpu_kernels.enabled():
        return 'C++ kernels (ghostdet/models/layers/csrc)'
    return f'PyTorch modules (kernels off: {cpu_kernels.SWITCH}=0, or not built)'


def write_markdown(rows: List[Row], path: str, args: argparse.Namespace, load: Tuple[Tuple, Tuple],
                   seconds: float) -> str:
    header, body = table_rows(rows)
    text = '\n'.join([
        f'# Benchmark ({time.strftime("%Y-%m-%d %H:%M")})', '',
        f'- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs; load average (1/5/15 min) '
        f'before {load[0][0]:.2f}/{load[0][1]:.2f}/{load[0][2]:.2f}, '
        f'after {load[1][0]:.2f}/{load[1][1]:.2f}/{load[1][2]:.2f}; run took {seconds:.0f} s',
        f'- {versions()}; {args.threads} thread(s) (torch.set_num_threads; onnxruntime intra-op)',
        f'- ghostdet CPU kernels (depthwise train blocks, ghost modules at inference): {kernels_path()}',
        '- Random weights, denormal floats flushed to zero (torch.set_flush_denormal, onnxruntime '
        'set_denormal_as_zero)',
        f'- Batch 1; {args.warmup} warm-up calls, then {args.repeats} timed calls (train step: '
        f'{args.step_repeats}) per model, interleaved round-robin; median and 10th-90th percentile',
        '- Forms: train = re-parameterizable branches (eval mode), fused = branches folded, plain = '
        'nothing to fuse, onnx = fused/plain model in onnxruntime. Train step = forward + backward '
        'of the sum of all outputs, train mode, train/plain form.',
        '- Layout: default = model as built with NCHW input; channels_last = model and input '
        'converted with torch.channels_last; ort = onnxruntime.',
        '- GMACs: MMEngine get_model_complexity_info, which counts one multiply-accumulate as one '
        '"flop" (FLOPs = 2 x MACs).',
        '- lat/X, step/X: median of the row / median of peer X at the same size and layout (onnx rows: '
        'vs the eager peer). R18 = mmdet ResNet-18, MBv2 = mmdet MobileNetV2-1.0x, timm-MBv2 = timm '
        f'{TIMM_MOBILENETV2} features, timm-train / timm-fused = timm GhostNetV3 of the same width in its default (train) / fused form; all '
        'backbones run to their stride-4/8/16/32 stage ends.', '', markdown_table(header, body), ''])
    with open(path, 'w') as f:
        f.write(text)
    return text


def plot(rows: List[Row], path: str) -> None:
    """Horizontal bars (median, p10-p90 whiskers) of latency and train step, one row per size."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = list(dict.fromkeys(r.size for r in rows))
    metrics = (('latency', 'inference latency'), ('step', 'train step (fwd + bwd)'))
    height = max(2.5, 0.3 * max(sum(r.size == s for r in rows) for s in sizes) + 1.2)
    fig, axes = plt.subplots(len(sizes), 2, figsize=(13, height * len(sizes)), squeeze=False)
    for ax_row, size in zip(axes, sizes):
        for ax, (attr, title) in zip(ax_row, metrics):
            chosen = [r for r in rows if r.size == size and getattr(r, attr)]
            stats = [getattr(r, attr) for r in chosen]
            medians = np.array([s.median for s in stats])
            spread = np.array([[s.median - s.p10 for s in stats], [s.p90 - s.median for s in stats]])
            ax.barh(range(len(chosen)), medians, xerr=spread if chosen else None, capsize=3,
                    color=['0.6' if r.is_peer else 'tab:blue' for r in chosen])
            ax.set_yticks(range(len(chosen)), [r.label for r in chosen], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel('ms per image (median, p10-p90)')
            ax.set_title(f'{title}, {size}, batch 1', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------
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
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    args = parser.parse_args(argv)
    if not args.backbones and not args.configs:
        parser.error('nothing to measure: give --backbones and/or --configs')
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.step_repeats < 0:
        parser.error('--threads and --repeats must be >= 1, --warmup and --step-repeats >= 0')
    return args


def measure(args: argparse.Namespace, subjects: List[Subject], onnx_dir: str) -> List[Row]:
    """Build every form of every subject, analyse it, then time all of them together."""
    rows: Dict[Tuple, Row] = {}
    latency_fns: Dict[Tuple, Callable] = {}
    step_fns: Dict[Tuple, Callable] = {}
    inputs = {f'{h}x{w}': torch.randn(1, 3, h, w) for h, w in args.sizes}
    for v in (v for s in subjects for v in build_variants(s)):
        analysis = {size: complexity(v.model, x) for size, x in inputs.items()}  # before the ONNX trace
        session = onnx_session(v, args.sizes[0], args.threads, onnx_dir) \
            if args.onnx and v.form != 'train' else None
        for size, x in inputs.items():
            params, macs = analysis[size]
            for layout in args.memory_formats:
                key = (v.subject.name, v.form, size, layout)
                rows[key] = Row(*key, params / 1e6, macs / 1e9, v.subject.is_peer)
                latency_fns[key] = forward_fn(*in_layout(v.model, x, layout))
                if v.form != 'fused' and args.step_repeats:
                    step_fns[key] = train_step_fn(*in_layout(copy.deepcopy(v.model), x, layout))
            if session is not None:
                key = (v.subject.name, 'onnx', size, ONNX_LAYOUT)
                rows[key] = Row(*key, params / 1e6, macs / 1e9, v.subject.is_peer)
                latency_fns[key] = onnx_fn(session, x)
    for key, stats in time_interleaved(latency_fns, args.warmup, args.repeats).items():
        rows[key].latency = stats
    for key, stats in time_interleaved(step_fns, args.warmup, args.step_repeats).items():
        rows[key].step = stats
    return list(rows.values())


def onnx_session(variant: Variant, size: Tuple[int, int], threads: int, onnx_dir: str):
    """Export a fused/plain model (dynamic input size) and open an onnxruntime session for it."""
    path = osp.join(onnx_dir, f'{variant.subject.name}.onnx')
    export(variant.model, path, torch.randn(1, 3, *size))
    return ort_session(path, threads, flush_denormal=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # Randomly initialised nets produce denormal floats that trained ones rarely do; on x86 they
    # slow some models (timm's GhostNetV3 train step: 20x) and would decide the comparison.
    torch.set_flush_denormal(True)
    MMLogger.get_current_instance().setLevel('ERROR')  # the analysis warns per unsupported op
    init_default_scope('mmdet')
    subjects = (backbone_subjects(args.backbones, args.peers) if args.backbones else []) + \
        [config_subject(path) for path in args.configs]
    os.makedirs(args.out_dir, exist_ok=True)
    load_before, start = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory() as onnx_dir:
        rows = measure(args, subjects, onnx_dir)
    add_ratios(rows, {s.name: s.refs for s in subjects}, args.memory_formats)
    out = osp.join(args.out_dir, OUT_NAME)
    text = write_markdown(rows, f'{out}.md', args, (load_before, os.getloadavg()),
                          time.perf_counter() - start)
    write_csv(rows, f'{out}.csv')
    plot(rows, f'{out}.png')
    print(text)
    print(f'wrote {out}.csv, {out}.md, {out}.png')


if __name__ == '__main__':
    main()
