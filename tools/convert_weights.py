"""Convert GhostNetV3 ImageNet weights (the authors' checkpoint or a timm ``ghostnetv3_*`` state dict)
into a ghostdet backbone checkpoint, unfused (default, for fine-tuning) or fused (``--fuse``).

    python tools/convert_weights.py ghostnetv3-1.0.pth.tar checkpoints/ghostnetv3-1.0x_in1k.pth

The classifier (``conv_head``, ``classifier``) is dropped; the authors' ``state_dict_ema`` is preferred
(it is the 77.1% top-1 model) unless ``--no-ema``. The result loads through
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` with no missing or unexpected keys.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from ghostdet.models.backbones.ghostnetv3 import NUM_OUTPUTS, PUBLISHED_WIDTHS, GhostNetV3
from ghostdet.safe_load import load_from_local_safely
from ghostdet.weights import convert_to_ghostdet


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official .pth.tar, timm state dict, or ghostdet checkpoint')
    parser.add_argument('dst', help='output ghostdet backbone checkpoint (.pth)')
    parser.add_argument('--fuse', action='store_true', help='write the fused (deploy=True) form')
    parser.add_argument('--no-ema', action='store_true', help="take 'state_dict', not 'state_dict_ema'")
    parser.add_argument('--widen-factor', type=float, default=None,
                        help=f'width of the source model (default: detected among {PUBLISHED_WIDTHS})')
    return parser.parse_args()


def load_source(path: str) -> dict:
    """Load with ghostdet's safe loader, which admits the authors' training ``args`` (a Namespace)."""
    if not osp.isfile(path):
        raise SystemExit(f'error: {path} does not exist')
    return load_from_local_safely(path, map_location='cpu')


def build_matching_model(state: dict, widen_factor: float = None) -> GhostNetV3:
    """Build the unfused or fused GhostNetV3 whose shapes match ``state`` exactly."""
    deploy = any('.fused.' in k for k in state)
    widths = [widen_factor] if widen_factor else PUBLISHED_WIDTHS
    for width in widths:
        model = GhostNetV3(width, out_indices=tuple(range(NUM_OUTPUTS)), deploy=deploy)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        if shapes == {k: v.shape for k, v in state.items()}:
            return model
    raise SystemExit(f'error: the weights match no GhostNetV3 of width {widths} '
                     f"({'fused' if deploy else 'unfused'} form); pass --widen-factor")


def main() -> None:
    args = parse_args()
    state = convert_to_ghostdet(load_source(args.src), prefer_ema=not args.no_ema)
    model = build_matching_model(state, args.widen_factor)
    model.load_state_dict(state, strict=True)
    if args.fuse:
        model.eval().switch_to_deploy()
    meta = dict(widen_factor=model.widen_factor, deploy=model.deploy, source=osp.basename(args.src))
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    tmp = args.dst + '.tmp'
    torch.save(dict(meta=meta, state_dict=model.state_dict()), tmp)
    os.replace(tmp, args.dst)
    print(f'{args.dst}: GhostNetV3-{model.widen_factor}x, {"fused" if model.deploy else "unfused"}, '
          f'{sum(p.numel() for p in model.parameters()):,} parameters')


if __name__ == '__main__':
    sys.exit(main())
