"""Small detector configs and runs shared by the re-parameterization tests (CPU, seconds each)."""
import copy
import json
import os.path as osp
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from ghostdet.datasets import SHAPES_CLASSES
from ghostdet.models import GhostNetV3

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'retinanet': osp.join(REPO, 'configs', 'retinanet_ghostnetv3_coco.py'),
    'fcos': osp.join(REPO, 'configs', 'fcos_ghostnetv3_coco.py'),
}
# FCOS's GN head needs multiples of 32 channels and inputs of ~192 px and more.
IMAGE_SIZE = {'retinanet': 128, 'fcos': 192}
CHANNELS = 32
WIDTH = 0.5


def _pipeline(size: int) -> List[dict]:
    """No random transform: resumed and uninterrupted runs see identical batches."""
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(size, size), keep_ratio=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ]


def _dataloader(data_root: str, split: str, size: int, batch_size: int, train: bool) -> dict:
    return dict(
        batch_size=batch_size,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=train),
        dataset=dict(
            type='CocoDataset',
            data_root=data_root,
            ann_file=f'annotations/instances_{split}.json',
            data_prefix=dict(img=f'{split}/'),
            metainfo=dict(classes=SHAPES_CLASSES),
            filter_cfg=dict(filter_empty_gt=train),
            test_mode=not train,
            pipeline=_pipeline(size)))


def detector_config(kind: str, data_root: str, work_dir: str, max_epochs: int = 1, batch_size: int = 2,
                    hook: bool = True, backbone: Optional[dict] = None,
                    neck_in_channels: Optional[Sequence[int]] = None) -> Config:
    """The shipped config of ``kind`` shrunk for a CPU test: GhostNetV3-0.5x from scratch (or
    ``backbone``), 32-channel FPN and head, AdamW (a few steps already find some objects), a
    checkpoint every epoch. It is evaluated on its training images, with scores kept down to 0: after
    a few steps only there is the mAP above 0."""
    cfg = Config.fromfile(CONFIGS[kind])
    size = IMAGE_SIZE[kind]
    model = cfg.model
    if backbone is None:
        model.backbone.update(widen_factor=WIDTH, init_cfg=None)
        neck_in_channels = GhostNetV3.out_channels_for(WIDTH, model.backbone.out_indices)
    else:
        model.backbone = backbone
    model.neck.update(in_channels=list(neck_in_channels), out_channels=CHANNELS)
    model.bbox_head.update(num_classes=len(SHAPES_CLASSES), in_channels=CHANNELS, feat_channels=CHANNELS,
                           stacked_convs=1)
    model.test_cfg.score_thr = 0.0
    cfg.optim_wrapper.optimizer = dict(type='AdamW', lr=2e-3, weight_decay=0.05)
    cfg.train_dataloader = _dataloader(data_root, 'train', size, batch_size, train=True)
    cfg.val_dataloader = _dataloader(data_root, 'train', size, 2, train=False)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = dict(type='CocoMetric', ann_file=osp.join(data_root, 'annotations/instances_train.json'),
                             metric='bbox')
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs + 1)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.custom_hooks = [dict(type='ReparamCheckpointHook')] if hook else []
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.work_dir = work_dir
    # One MessageHub, logger and visualizer per runner (mmdet names its visualizer globally).
    cfg.experiment_name = cfg.visualizer.name = uuid.uuid4().hex
    return cfg


def train(cfg: Config) -> Runner:
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def evaluate(cfg: Config, checkpoint: str, work_dir: str) -> Tuple[Dict[str, float], str]:
    """COCO metrics of ``checkpoint`` under ``cfg``, and the file its raw detections were dumped to."""
    cfg = copy.deepcopy(cfg)
    dump = osp.join(work_dir, 'detections.pkl')
    cfg.test_evaluator = [cfg.val_evaluator, dict(type='DumpDetResults', out_file_path=dump)]
    cfg.update(load_from=checkpoint, resume=False, work_dir=work_dir)
    cfg.experiment_name = cfg.visualizer.name = uuid.uuid4().hex
    return Runner.from_cfg(cfg).test(), dump


def logged_losses(runner: Runner) -> Dict[int, float]:
    """iteration -> total loss, as the LoggerHook wrote them (scalars.json)."""
    path = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return {row['iter']: row['loss'] for row in rows if 'loss' in row}


@pytest.fixture(scope='module', autouse=True)
def single_thread():
    """Models this small run faster on one thread; on shared cores, more threads are much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
