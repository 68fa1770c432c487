"""The main job on a CPU: synthetic data -> train -> COCO evaluation -> fused deploy model -> evaluation.

    python tools/demo.py            (or: make demo)

Makes the shapes dataset (data/shapes), trains the demo RetinaNet-GhostNetV3 (configs/demo/), evaluates
the training checkpoint and the fused deploy checkpoint that ReparamCheckpointHook wrote beside it with
CocoMetric, draws predictions and training curves, and prints a summary table.
"""
import argparse
import glob
import os.path as osp
import time

from mmengine.config import Config, DictAction

import ghostdet  # noqa: F401
from ghostdet.apis import build_runner
from ghostdet.apis.demo import (DEFAULT_CONFIG, build_model, demo_config, draw_predictions, evaluate,
                                plot_curves, summary_table)
from ghostdet.datasets.shapes import make_shapes_dataset
from ghostdet.deploy import DEPLOY_CONFIG_NAME, deploy_checkpoint_path
from ghostdet.utils.analysis import count_params_and_macs
from ghostdet.utils.logs import read_scalars


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/shapes/')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.time()
    make_shapes_dataset(args.data_root)
    cfg = demo_config(args.config, args.work_dir, args.data_root, args.cfg_options)
    build_runner(cfg).train()
    train_minutes = (time.time() - start) / 60

    last = osp.join(args.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')
    deploy_ckpt = deploy_checkpoint_path(last)
    deploy_config = osp.join(args.work_dir, DEPLOY_CONFIG_NAME)
    deploy_cfg = Config.fromfile(deploy_config)
    train_metrics = evaluate(cfg, last, osp.join(args.work_dir, 'eval_train'))
    deploy_metrics = evaluate(deploy_cfg, deploy_ckpt, osp.join(args.work_dir, 'eval_deploy'))

    size = tuple(cfg.image_scale)
    train_model = build_model(cfg, last)
    deploy_model = build_model(deploy_cfg, deploy_ckpt)
    val_images = sorted(glob.glob(osp.join(args.data_root, 'val', '*.png')))[:8]
    predictions_png = osp.join(args.work_dir, 'predictions.png')
    curves_png = osp.join(args.work_dir, 'curves.png')
    draw_predictions(deploy_model, val_images, cfg.metainfo['classes'], predictions_png)
    plot_curves(read_scalars(args.work_dir), curves_png)

    train_complexity = count_params_and_macs(train_model, size, branches=True)  # as it trains: every branch
    rows = [('training checkpoint', train_metrics, train_complexity, last),
            ('deploy (fused)', deploy_metrics, count_params_and_macs(deploy_model, size), deploy_ckpt)]
    print(f'\nghostdet demo: {osp.basename(args.config)}, {cfg.train_cfg.max_iters} iterations, '
          f'trained in {train_minutes:.1f} min, total {(time.time() - start) / 60:.1f} min')
    print(summary_table(rows, size))
    print(f'deploy config: {deploy_config}')
    print(f'pictures: {predictions_png}, {curves_png}')


if __name__ == '__main__':
    main()
