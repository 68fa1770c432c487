"""Parameters and MACs of detectors from configs, per part (backbone, neck, head), unfused and fused.

    python tools/get_flops.py configs/retinanet_ghostnetv3_coco.py mmdet::retinanet/retinanet_r18_fpn_1x_coco.py

Counts come from MMEngine's FlopAnalyzer (one multiply-accumulate = one "flop", i.e. MACs, as mmdet's
get_flops and the GhostNetV3 paper report), for one image of ``--shape`` without NMS.
"""
import argparse
from typing import List, Sequence

from mmengine.registry import init_default_scope

import ghostdet  # noqa: F401
from ghostdet.apis import read_config
from ghostdet.deploy import build_cpu_model, fuse_model
from ghostdet.utils.analysis import complexity_by_part


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='+', help='config files (mmdet:: paths allowed)')
    parser.add_argument('--shape', type=int, nargs=2, default=[640, 640], metavar=('H', 'W'))
    return parser.parse_args()


def rows_for(path: str, shape: Sequence[int]) -> List[List[str]]:
    cfg = read_config(path)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = build_cpu_model(cfg.model)
    forms = {}
    if any(not getattr(m, 'deploy', True) for m in model.modules() if hasattr(m, 'forward_branches')):
        forms['train'] = complexity_by_part(model, tuple(shape), branches=True)  # as it trains: every branch
    form = 'fused' if fuse_model(model) else 'plain'
    forms[form] = complexity_by_part(model, tuple(shape))
    return [[path, form, part, f'{params / 1e6:.2f}', f'{macs / 1e9:.2f}']
            for form, parts in forms.items() for part, (params, macs) in parts.items()]


def main() -> None:
    args = parse_args()
    header = ['config', 'form', 'part', 'params (M)', f'GMACs @{args.shape[0]}x{args.shape[1]}']
    rows = [row for path in args.configs for row in rows_for(path, args.shape)]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print('  '.join(str(c).ljust(w) for c, w in zip(row, widths)))


if __name__ == '__main__':
    main()
