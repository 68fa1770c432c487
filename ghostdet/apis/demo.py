"""The steps of the demo job (``tools/demo.py``): the demo config on a data root, COCO evaluation of a
checkpoint, the pictures (predictions, training curves) and the summary table."""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from matplotlib.figure import Figure
from mmengine.config import Config
from PIL import Image, ImageDraw

from mmdet.apis import inference_detector, init_detector

from .runner_setup import build_runner

DEFAULT_CONFIG = 'configs/demo/retinanet_ghostnetv3-lite_shapes.py'
COLOURS = ((255, 80, 80), (80, 220, 80), (90, 150, 255), (255, 200, 40))
# One row of the summary: name, COCO metrics, (parameters, MACs), checkpoint.
SummaryRow = Tuple[str, Dict[str, float], Tuple[int, int], str]


def demo_config(path: str, work_dir: str, data_root: str, options: Optional[dict] = None) -> Config:
    """The config at ``path`` reading its data (images and val annotations) from ``data_root``."""
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
    return init_detector(cfg, checkpoint, device='cpu')


def draw_predictions(model: torch.nn.Module, images: List[str], classes: Tuple[str, ...], path: str,
                     score_thr: float = 0.3) -> None:
    """A 2x4 grid of val images with the predicted boxes, class and score."""
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
    fig = Figure(figsize=(10, 3.5))  # no pyplot: no global backend, nothing left open
    ax_loss, ax_map = fig.subplots(1, 2)
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


def summary_table(rows: Sequence[SummaryRow], size: Tuple[int, int]) -> str:
    """Metrics, parameters and MACs at ``size`` (height, width) of each checkpoint, one line each."""
    lines = [f'{"model":<22}{"mAP":>7}{"mAP50":>8}{"params":>10}{f"GMACs@{size[0]}x{size[1]}":>15}  file']
    for name, metrics, (params, macs), path in rows:
        lines.append(f'{name:<22}{metrics.get("coco/bbox_mAP", 0):>7.3f}{metrics.get("coco/bbox_mAP_50", 0):>8.3f}'
                     f'{params / 1e6:>9.2f}M{macs / 1e9:>15.2f}  {path}')
    return '\n'.join(lines)
