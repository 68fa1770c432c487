"""How exact one train-mode step of GhostNetV3 is: ghostdet as configured (fast paths on) and the reference
computation (NCHW, plain PyTorch branches, as the authors' model computes), both in float32, against the
reference computation in float64.

    python tools/check_exactness.py --widths 0.5 1.0 --shape 2 3 131 171
"""
import argparse

import torch

from ghostdet.exactness import compare_with_float64, random_backbone


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--widths', type=float, nargs='+', default=[0.5, 1.0])
    parser.add_argument('--shape', type=int, nargs=4, default=[2, 3, 131, 171], metavar=('N', 'C', 'H', 'W'))
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(f'train-mode step on a {"x".join(map(str, args.shape))} batch, errors against float64 '
          '(max |error| / max |exact| per tensor)\n')
    print('| width | run (float32) | stage-end outputs, stride 2 … 32 | median gradient | '
          'share of gradients > 1e-3 | worst gradient | running statistics |')
    print('|---|---|---|---|---|---|---|')
    for width in args.widths:
        torch.manual_seed(args.seed)
        model = random_backbone(width)
        for run, errors in compare_with_float64(model, torch.randn(*args.shape)).items():
            outputs = ' / '.join(f'{e:.1e}' for e in errors.outputs)
            print(f'| {width} | {run} | {outputs} | {errors.median_gradient:.1e} | '
                  f'{errors.share_of_gradients_above(1e-3):.1%} | {errors.worst_gradient:.1e} '
                  f'(`{errors.worst_gradient_name}`) | {max(errors.buffers.values()):.1e} |')


if __name__ == '__main__':
    main()
