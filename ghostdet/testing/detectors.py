"""Small detectors for tests: the shipped RetinaNet / FCOS configs shrunk to train and evaluate in
seconds on a CPU, their runs, and a loss + backward pass on generated data."""
import copy
import os.path as osp
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

from mmdet.testing import demo_mm_inputs

from ..datasets import SHAPES_CLASSES
from ..models import GhostNetV3
from ..utils.logs import read_scalars, training_records

#: The repository root of the checkout ghostdet is imported from (an editable install, as the tests
#: run): its ``configs/`` and ``tools/``.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'retinanet': osp.join(REPO, 'configs', 'retinanet_ghostnetv3_coco.py'),
    'fcos': osp.join(REPO, 'configs', 'fcos_ghostnetv3_coco.py'),
    'rtmdet': osp.join(REPO, 'configs', 'rtmdet', 'rtmdet_ghostnetv3-1.0x_8xb32-300e_coco.py'),
    'yolox': osp.join(REPO, 'configs', 'yolox', 'yolox_ghostnetv3-1.0x_8xb8-300e_coco.py'),
}
# FCOS's GN head needs multiples of 32 channels and inputs of ~192 px and more.
IMAGE_SIZE = {'retinanet': 128, 'fcos': 192, 'rtmdet': 128, 'yolox': 128}
CHANNELS = 32
WIDTH = 0.5
TEACHER_CHANNELS = 64  # twice the students' FPN channels: PKD needs adapters
TEACHER_WIDTH = 1.0  # the students' backbones are GhostNetV3-0.5x


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
    model.data_preprocessor.batch_augments = None  # YOLOX's multi-scale batches (320-640 px)
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


def teacher_model_cfg(kind: str, channels: int = TEACHER_CHANNELS) -> ConfigDict:
    """A GhostNetV3-1.0x detector of ``kind`` with ``channels``-channel FPN and head, from scratch: a
    teacher of another width (and FPN width) than :func:`detector_config`'s students."""
    backbone = dict(type='GhostNetV3', widen_factor=TEACHER_WIDTH, out_indices=(1, 2, 3, 4), init_cfg=None)
    cfg = detector_config(kind, '', '', backbone=backbone,
                          neck_in_channels=GhostNetV3.out_channels_for(TEACHER_WIDTH)).model
    cfg.neck.out_channels = channels
    cfg.bbox_head.update(in_channels=channels, feat_channels=channels)
    return cfg


def train(cfg: Config) -> Runner:
    """The runner of ``cfg``, after its training."""
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
    return {row['iter']: row['loss'] for row in training_records(read_scalars(runner.log_dir))}


def loss_and_backward(model: nn.Module, image_shapes: Sequence[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
    """The training losses of a detector on generated images of ``image_shapes`` (3 boxes each, 80
    classes), backpropagated; asserts a finite total and gradients that reach the backbone."""
    packed = demo_mm_inputs(len(image_shapes), [(3, *s) for s in image_shapes], num_items=[3] * len(image_shapes),
                            num_classes=80)
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    return losses
