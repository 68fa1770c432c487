"""Fuse a training checkpoint into a deploy checkpoint, and write the deploy config beside it.

What ReparamCheckpointHook does at every save, for a checkpoint that already exists:

    python tools/reparameterize.py CONFIG CHECKPOINT OUT_DIR [--verify] [--no-ema]

writes OUT_DIR/<checkpoint name>_deploy.pth and OUT_DIR/deploy_config.py; then
``tools/test.py OUT_DIR/deploy_config.py OUT_DIR/<name>_deploy.pth`` evaluates the fused model.
"""
import argparse
import copy
import os
import os.path as osp
import sys
from typing import List, Optional

from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint

from ghostdet.apis import fail, read_config, require_checkpoint
from ghostdet.reparam import (DEPLOY_CONFIG_NAME, OutputDiff, WeightsMismatchError, build_cpu_model,
                              checkpoint_weights, compare_outputs, count_reparam_leaves,
                              deploy_checkpoint_path, deploy_source_config, fuse_weights,
                              is_deploy_checkpoint, load_weights, save_deploy_checkpoint, source_weights,
                              to_deploy_config, write_deploy_config)
from ghostdet.safe_load import UnsafeCheckpointError

# Square, odd and non-square (both orientations): padding and rounding differ at every level.
VERIFY_SIZES = ((320, 320), (257, 383), (415, 193))
REL_TOLERANCE = 1e-4


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='the training config the checkpoint was made with')
    parser.add_argument('checkpoint', help='a training checkpoint (unfused)')
    parser.add_argument('out_dir', help='where the deploy checkpoint and deploy_config.py go')
    parser.add_argument('--verify', action='store_true',
                        help='compare the fused and the unfused model on random inputs of several sizes; '
                        f'exit 1 if any head output differs by more than {REL_TOLERANCE} (relative)')
    parser.add_argument('--no-ema', action='store_true',
                        help='fuse the raw weights instead of the EMA weights of a checkpoint saved with '
                        'EMAHook (its state_dict holds the EMA weights, the evaluated ones)')
    return parser.parse_args(argv)


def _load(path: str) -> dict:
    require_checkpoint(path, 'CHECKPOINT')
    try:
        return _load_checkpoint(path, map_location='cpu')
    except UnsafeCheckpointError as err:
        fail(str(err))


def _print_diffs(diffs: List[OutputDiff]) -> float:
    """Print one row per output and size; return the largest relative difference."""
    print(f'{"input (h x w)":<14}{"output":<16}{"max abs diff":>14}{"max rel diff":>14}')
    for d in diffs:
        print(f'{d.size[0]:>4} x {d.size[1]:<7}{d.name:<16}{d.abs:>14.3e}{d.rel:>14.3e}')
    return max(d.rel for d in diffs)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    cfg = read_config(args.config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    checkpoint = _load(args.checkpoint)

    deploy_cfg = to_deploy_config(cfg)
    deploy_model = build_cpu_model(deploy_cfg.model)
    if is_deploy_checkpoint(checkpoint, deploy_model):
        fail(f'{args.checkpoint} is already a deploy (fused) checkpoint. Pass the training checkpoint it was '
             'made from; a deploy checkpoint is evaluated with its deploy config: tools/test.py '
             f'<dir>/{DEPLOY_CONFIG_NAME} {args.checkpoint}')
    source = build_cpu_model(deploy_source_config(cfg))
    if count_reparam_leaves(source) == 0:
        fail(f'the model of {args.config} has nothing to re-parameterize (no module with switch_to_deploy())')
    if args.no_ema and 'ema_state_dict' not in checkpoint:
        print(f'note: {args.checkpoint} holds no EMA weights; fusing its only weights')
    try:
        load_weights(source, source_weights(checkpoint_weights(checkpoint, ema=not args.no_ema), cfg),
                     args.checkpoint)
    except WeightsMismatchError as err:
        fail(str(err))
    reference = copy.deepcopy(source) if args.verify else None
    fused = fuse_weights(source)

    os.makedirs(args.out_dir, exist_ok=True)
    out_path = deploy_checkpoint_path(args.checkpoint, args.out_dir)
    write_deploy_config(osp.join(args.out_dir, DEPLOY_CONFIG_NAME), deploy_cfg)
    save_deploy_checkpoint(out_path, fused, checkpoint.get('meta', {}), osp.basename(args.checkpoint),
                           deploy_cfg)
    print(f'{out_path}: {fused.num_fused} blocks fused in {fused.seconds:.2f} s, '
          f'{fused.num_params:,} parameters, {osp.getsize(out_path) / 2**20:.2f} MB '
          f'(training checkpoint {osp.getsize(args.checkpoint) / 2**20:.2f} MB)')
    print(f'deploy config: {osp.join(args.out_dir, DEPLOY_CONFIG_NAME)}')
    if reference is None:
        return 0

    # Through the written file and the deploy config: what users will load.
    load_weights(deploy_model, _load(out_path)['state_dict'], out_path)
    worst = _print_diffs(compare_outputs(reference, deploy_model, VERIFY_SIZES))
    verdict = 'OK' if worst <= REL_TOLERANCE else 'FAILED'
    print(f'largest relative difference {worst:.3e} (tolerance {REL_TOLERANCE:.0e}): {verdict}')
    return 0 if verdict == 'OK' else 1


if __name__ == '__main__':
    sys.exit(main())
