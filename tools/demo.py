"""The main job on a CPU: synthetic data -> train -> COCO evaluation -> fused deploy model -> evaluation.

    python tools/demo.py            (or: make demo)

Makes the shapes dataset (data/shapes), trains the demo RetinaNet-GhostNetV3 (configs/demo/), evaluates
the training checkpoint and the fused deploy checkpoint that ReparamCheckpointHook wrote beside it with
CocoMetric, draws predictions and training curves, and prints a summary table.
"""
import argparse
import glob
import json
import os.path as osp
import time
from typing import Dict, List, Tuple

import matplotlib
import torch
from mmengine.config import Config, DictAction
from PIL import Image, ImageDraw

import ghostdet  # noqa: F401
from ghostdet.analysis import count_params_and_macs
from ghostdet.apis import build_runner
from ghostdet.datasets.shapes import make_shapes_dataset
from ghostdet.reparam import branch_by_branch

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_CONFIG = 'configs/demo/retinanet_ghostnetv3-lite_shapes.py'
COLOURS = ((255, 80, 80), (80, 220, 80), (90, 150, 255), (255, 200, 40))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/shapes/')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    return parser.parse_args()


def load_config(path: str, work_dir: str, data_root: str, options: dict = None) -> Config:
    cfg = Config.fromfile(path)
    cfg.work_dir = work_dir
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = osp.join(data_root, 'annotations/instances_val.json')
    if options:
        cfg.merge_from_dict(options)
    return cfg


def evaluate(cfg: Config, checkpoint: str, work_dir: str) -> Dict[str, float]:
    """COCO box metrics of ``checkpoint`` on the val split, through a real Runner."""
    cfg = cfg.copy()
    cfg.work_dir, cfg.load_from = work_dir, checkpoint
    return build_runner(cfg).test()


def build_model(cfg: Config, checkpoint: str) -> torch.nn.Module:
    from mmdet.apis import init_detector
    return init_detector(cfg, checkpoint, device='cpu')


def draw_predictions(model: torch.nn.Module, images: List[str], classes: Tuple[str, ...], path: str,
                     score_thr: float = 0.3) -> None:
    """A 2x4 grid of val images with the predicted boxes, class and score."""
    from mmdet.apis import inference_detector
    tiles = []
    for image_path, result in zip(images, inference_detector(model, images)):
        image = Image.open(image_path).convert('RGB')
        draw = ImageDraw.Draw(image)
        pred = result.pred_instances
        for box, label, score in zip(pred.bboxes.tolist(), pred.labels.tolist(), pred.scores.tolist()):
            if score >= score_thr:
                draw.rectangle(box, outline=COLOURS[label % len(COLOURS)], width=2)
                draw.text((box[0] + 2, box[1] + 1), f'{classes[label]} {score:.2f}',
                          fill=COLOURS[label % len(COLOURS)])
        tiles.append(image)
    width, height = tiles[0].size
    grid = Image.new('RGB', (4 * width, 2 * height))
    for i, tile in enumerate(tiles[:8]):
        grid.paste(tile, ((i % 4) * width, (i // 4) * height))
    grid.save(path)


def read_scalars(work_dir: str) -> List[dict]:
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        return []
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(records: List[dict], path: str) -> None:
    """Training loss and validation mAP / mAP50 against the iteration (validation records carry the
    epoch as their step, so they take the iteration of the training record before them)."""
    train, val, last_iter = [], [], 0
    for record in records:
        if 'loss' in record:
            train.append(record)
            last_iter = record['step']
        elif 'coco/bbox_mAP' in record:
            val.append(dict(record, step=last_iter))
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ('loss', 'loss_cls', 'loss_bbox'):
        ax_loss.plot([r['step'] for r in train], [r.get(key) for r in train], label=key)
    ax_loss.set(xlabel='iteration', title='training loss')
    ax_loss.legend()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        ax_map.plot([r['step'] for r in val], [r[key] for r in val], marker='o', label=key)
    ax_map.set(xlabel='iteration', title='validation (CocoMetric)', ylim=(0, 1))
    ax_map.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    start = time.time()
    make_shapes_dataset(args.data_root)
    cfg = load_config(args.config, args.work_dir, args.data_root, args.cfg_options)
    build_runner(cfg).train()
    train_minutes = (time.time() - start) / 60

    last = osp.join(args.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')
    deploy_ckpt = last.replace('.pth', '_deploy.pth')
    deploy_cfg = Config.fromfile(osp.join(args.work_dir, 'deploy_config.py'))
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

    with branch_by_branch(train_model):  # the train form counted branch by branch, as it trains
        train_complexity = count_params_and_macs(train_model, size)
    rows = [('training checkpoint', train_metrics, train_complexity, last),
            ('deploy (fused)', deploy_metrics, count_params_and_macs(deploy_model, size), deploy_ckpt)]
    print(f'\nghostdet demo: {osp.basename(args.config)}, {cfg.train_cfg.max_iters} iterations, '
          f'trained in {train_minutes:.1f} min, total {(time.time() - start) / 60:.1f} min')
    print(f'{"model":<22}{"mAP":>7}{"mAP50":>8}{"params":>10}{f"GMACs@{size[0]}x{size[1]}":>15}  file')
    for name, metrics, (params, macs), path in rows:
        print(f'{name:<22}{metrics.get("coco/bbox_mAP", 0):>7.3f}{metrics.get("coco/bbox_mAP_50", 0):>8.3f}'
              f'{params / 1e6:>9.2f}M{macs / 1e9:>15.2f}  {path}')
    print(f'deploy config: {osp.join(args.work_dir, "deploy_config.py")}')
    print(f'pictures: {predictions_png}, {curves_png}')


if __name__ == '__main__':
    main()
