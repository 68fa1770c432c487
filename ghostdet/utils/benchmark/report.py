"""A benchmark run written down: ``<out>.csv`` (raw numbers), ``<out>.md`` (the table with the machine,
versions and method) and ``<out>.png`` (bars with p10-p90 whiskers)."""
import csv
import os
import platform
import time
from typing import List, Optional, Tuple

import numpy as np
import torch

from ... import ops
from .measure import LATENCY_REFS, STEP_REFS, Row, Settings
from .subjects import TIMM_MOBILENETV2
from .timing import Stats

LoadAverage = Tuple[float, float, float]


def ratio_columns(rows: List[Row]) -> List[str]:
    """The ``lat/<peer>`` and ``step/<peer>`` columns that some row has, in table order."""
    present = {key for r in rows for key in r.ratios}
    return [f'{m}/{label}' for m, table in (('lat', LATENCY_REFS), ('step', STEP_REFS))
            for label, _, _ in table if f'{m}/{label}' in present]


def _ms(stats: Optional[Stats]) -> Tuple[str, str]:
    return ('', '') if stats is None else (f'{stats.median:.1f}', f'{stats.p10:.1f}-{stats.p90:.1f}')


def table_rows(rows: List[Row]) -> Tuple[List[str], List[List[str]]]:
    """Header and cells of the Markdown table."""
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
    """Parameters and MACs as integers, milliseconds and ratios unrounded."""
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
    if ops.kernels_built():
        return 'C++ kernels (ghostdet/ops/csrc)'
    return f'PyTorch modules (kernels off: {ops.SWITCH}=0, or not built)'


def write_markdown(rows: List[Row], path: str, settings: Settings, load: Tuple[LoadAverage, LoadAverage],
                   seconds: float) -> str:
    """The table under the conditions of the run (machine, load before/after, versions, method);
    returns the text written."""
    header, body = table_rows(rows)
    text = '\n'.join([
        f'# Benchmark ({time.strftime("%Y-%m-%d %H:%M")})', '',
        f'- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs; load average (1/5/15 min) '
        f'before {load[0][0]:.2f}/{load[0][1]:.2f}/{load[0][2]:.2f}, '
        f'after {load[1][0]:.2f}/{load[1][1]:.2f}/{load[1][2]:.2f}; run took {seconds:.0f} s',
        f'- {versions()}; {settings.threads} thread(s) (torch.set_num_threads; onnxruntime intra-op)',
        f'- ghostdet CPU kernels (depthwise train blocks, ghost modules at inference): {kernels_path()}',
        '- Random weights, denormal floats flushed to zero (torch.set_flush_denormal, onnxruntime '
        'set_denormal_as_zero); onnxruntime: static-shape export per size, threads that sleep between '
        'calls (allow_spinning 0: spinning threads of one session would slow the next model timed)',
        f'- Batch 1; {settings.warmup} warm-up calls, then {settings.repeats} timed calls (train step: '
        f'{settings.step_repeats}) per model, interleaved round-robin; median and 10th-90th percentile',
        '- Forms: train = re-parameterizable branches (eval mode), fused = branches folded, plain = '
        'nothing to fuse, onnx = fused/plain model in onnxruntime, end-to-end = the fused/plain detector '
        'on a random uint8 image of the size: its config\'s test pipeline (resize and pad to its own '
        'input size), data preprocessor, network, box decoding and NMS with score_thr 0 (NMS over all '
        'nms_pre candidates); its GMACs are those at the image size. Train step = forward + backward '
        'of the sum of all outputs, train mode, train/plain form.',
        '- Layout: default = model as built with NCHW input; channels_last = model and input '
        'converted with torch.channels_last; ort = onnxruntime.',
        '- GMACs: MMEngine FlopAnalyzer (ghostdet.utils.analysis, as tools/get_flops.py), which counts '
        'one multiply-accumulate as one "flop" (FLOPs = 2 x MACs); train form counted branch by branch.',
        '- lat/X, step/X: median of the row / median of peer X at the same size and layout (onnx rows: '
        'vs the eager peer). R18 = mmdet ResNet-18, MBv2 = mmdet MobileNetV2-1.0x, timm-MBv2 = timm '
        f'{TIMM_MOBILENETV2} features, timm-train / timm-fused = timm GhostNetV3 of the same width in its '
        'default (train) / fused form; all backbones run to their stride-4/8/16/32 stage ends.', '',
        markdown_table(header, body), ''])
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


def write_report(rows: List[Row], out: str, settings: Settings, load: Tuple[LoadAverage, LoadAverage],
                 seconds: float) -> str:
    """``<out>.md``, ``<out>.csv`` and ``<out>.png``; returns the Markdown text."""
    text = write_markdown(rows, f'{out}.md', settings, load, seconds)
    write_csv(rows, f'{out}.csv')
    plot(rows, f'{out}.png')
    return text
