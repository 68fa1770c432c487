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

from ghostdet.apis import fail, read_config
from ghostdet.deploy import (DEPLOY_CONFIG_NAME, WeightsMismatchError, build_cpu_model, checkpoint_weights,
                             compare_outputs, count_reparam_leaves, deploy_checkpoint_path, deploy_source_config,
                             format_diffs, fuse_weights, is_deploy_checkpoint, load_weights, read_checkpoint,
                             save_deploy_checkpoint, source_weights, to_deploy_config, write_deploy_config)
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


def reparameterize(args: argparse.Namespace) -> int:
    cfg = read_config(args.config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    checkpoint = read_checkpoint(args.checkpoint)
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
    weights = source_weights(checkpoint_weights(checkpoint, ema=not args.no_ema), cfg)
    load_weights(source, weights, args.checkpoint)
    reference = copy.deepcopy(source) if args.verify else None
    fused = fuse_weights(source)

    os.makedirs(args.out_dir, exist_ok=True)
    out_path = deploy_checkpoint_path(args.checkpoint, args.out_dir)
    config_path = osp.join(args.out_dir, DEPLOY_CONFIG_NAME)
    write_deploy_config(config_path, deploy_cfg)
    save_deploy_checkpoint(out_path, fused, checkpoint.get('meta', {}), osp.basename(args.checkpoint), deploy_cfg)
    print(f'{out_path}: {fused.num_fused} blocks fused in {fused.seconds:.2f} s, '
          f'{fused.num_params:,} parameters, {osp.getsize(out_path) / 2**20:.2f} MB '
          f'(training checkpoint {osp.getsize(args.checkpoint) / 2**20:.2f} MB)')
    print(f'deploy config: {config_path}')
    if reference is None:
        return 0

    # Through the written file and the deploy config: what users will load.
    load_weights(deploy_model, read_checkpoint(out_path)['state_dict'], out_path)
    diffs = compare_outputs(reference, deploy_model, VERIFY_SIZES)
    print(format_diffs(diffs))
    worst = max(d.rel for d in diffs)
    verdict = 'OK' if worst <= REL_TOLERANCE else 'FAILED'
    print(f'largest relative difference {worst:.3e} (tolerance {REL_TOLERANCE:.0e}): {verdict}')
    return 0 if verdict == 'OK' else 1


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return reparameterize(parse_args(argv))
    except (FileNotFoundError, UnsafeCheckpointError, WeightsMismatchError) as err:
        fail(str(err))


if __name__ == '__main__':
    sys.exit(main())
