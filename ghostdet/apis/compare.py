"""The steps of the detector comparison on the shapes data (``tools/compare_detectors.py``).

Every detector keeps its own recipe (model, optimizer type and settings, augmentation, EMA, the hooks
that switch augmentation off at the end) and is brought to a common short budget on the shapes data by
:func:`short_schedule_config`: the same images, image size, batch, epochs, warm-up and cosine decay.
Each run trains and evaluates in processes of its own (``tools/train.py``, ``tools/test.py``); a
detector with re-parameterizable blocks is evaluated from the deploy checkpoint that the fuse-on-save
hook wrote, the others from their checkpoint.
"""
import copy
import hashlib
import json
import os
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from ..datasets import SHAPES_CLASSES
from ..deploy.checkpoint import DEPLOY_CONFIG_NAME, deploy_checkpoint_path
from ..models.heads import with_predictable_ssd_head
from .kd_experiment import evaluate, step_time, train
from .runner_setup import fail, read_config

# name -> config: ghostdet's RTMDet-GhostNetV3, mmdet's compact detectors that users pick today, and the
# GhostNetV3 detector on the recipe that won among those (YOLOX's).
DETECTORS = {
    'RTMDet-GhostNetV3-1.0x': 'configs/rtmdet/rtmdet_ghostnetv3-1.0x_8xb32-300e_coco.py',
    'RTMDet-GhostNetV3-0.5x': 'configs/rtmdet/rtmdet_ghostnetv3-0.5x_8xb32-300e_coco.py',
    'RTMDet-tiny': 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
    'YOLOX-tiny': 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py',
    'SSDLite-MobileNetV2': 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py',
    'YOLOX-GhostNetV3-1.0x': 'configs/yolox/yolox_ghostnetv3-1.0x_8xb8-300e_coco.py',
}
NO_MIXUP = ' (no MixUp)'  # suffix of a detector's twin trained without MixUp
MIXUP_TYPES = ('MixUp', 'CachedMixUp')
SIZE_KEYS = ('img_scale', 'scale', 'crop_size', 'size', 'border', 'random_size_range')
METRICS = {'mAP': 'coco/bbox_mAP', 'mAP50': 'coco/bbox_mAP_50', 'mAP_s': 'coco/bbox_mAP_s'}
RUN_RECORD = 'run.json'  # a finished run's numbers and its config's hash


@dataclass
class Budget:
    """What every detector gets: image side (px), batch, epochs over the shapes train split, warm-up
    iterations."""
    image_size: int = 256
    batch_size: int = 8
    epochs: int = 4
    warmup_iters: int = 30


@dataclass
class Run:
    """One trained detector and seed, evaluated from its deploy (or plain) checkpoint."""
    name: str
    seed: int
    mAP: float
    mAP50: float
    mAP_s: float
    checkpoint: str
    config: str
    step_time: float


def _pipelines_in(node: Any) -> List[list]:
    """Every pipeline under a config node: datasets' (wrappers included) and augmentation-switch hooks'."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ('pipeline', 'switch_pipeline') and isinstance(v, list)]
        return found + [p for v in node.values() for p in _pipelines_in(v)]
    if isinstance(node, (list, tuple)):
        return [p for item in node for p in _pipelines_in(item)]
    return []


def pipelines(cfg: Config) -> List[list]:
    """Every pipeline of the config (dataloaders' and hooks')."""
    return _pipelines_in([cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader,
                          cfg.get('custom_hooks', [])])


def native_size(cfg: Config) -> int:
    """The side a recipe trains at: its mosaic's canvas, else its first train-time ``Resize``."""
    train = [t for p in _pipelines_in(cfg.train_dataloader) for t in p]
    for wanted in (('Mosaic', 'CachedMosaic'), ('Resize', )):
        sizes = [max(t.get('img_scale') or t['scale']) for t in train if t['type'] in wanted]
        if sizes:
            return sizes[0]
    raise ValueError(f'{cfg.filename}: no Mosaic or Resize in the train pipeline to take the image size from')


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value):
        return type(value)(int(round(v * factor)) for v in value)
    return value


def rescale_sizes(cfg: Config, factor: float) -> None:
    """Scale every size of every pipeline and of batch resizing (mosaic canvas, resize and crop scales,
    pads, affine borders, multi-scale ranges) by ``factor``, multiples of 32 kept for batch resizing."""
    for pipeline in pipelines(cfg):
        for transform in pipeline:
            for key in SIZE_KEYS:
                if key in transform:
                    transform[key] = _scaled(transform[key], factor)
    for augment in cfg.model.data_preprocessor.get('batch_augments') or []:
        if 'random_size_range' in augment:
            low, high = (max(32, round(v * factor / 32) * 32) for v in augment['random_size_range'])
            augment['random_size_range'] = (low, high)


def _innermost_dataset(dataset: ConfigDict) -> ConfigDict:
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def point_at_shapes(cfg: Config, data_root: str, batch_size: int) -> None:
    """The shapes splits (COCO format) in every dataloader, checked as ghostdet's shapes configs check
    them; repeat wrappers dropped (epochs are the budget), mixing wrappers (YOLOX's mosaic) kept."""
    root = osp.abspath(data_root).rstrip('/') + '/'
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'), ('test_dataloader', 'val')):
        loader_cfg = cfg[loader]
        if loader_cfg.dataset.type == 'RepeatDataset':
            loader_cfg.dataset = loader_cfg.dataset.dataset
        dataset = _innermost_dataset(loader_cfg.dataset)
        dataset.update(type='CheckedCocoDataset', data_root=root, ann_file=f'annotations/instances_{split}.json',
                       data_prefix=dict(img=f'{split}/'), metainfo=dict(classes=SHAPES_CLASSES))
        loader_cfg.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].update(ann_file=f'{root}annotations/instances_val.json', metric='bbox')


def set_short_schedule(cfg: Config, budget: Budget, iters_per_epoch: int) -> None:
    """Epoch-based training for ``budget.epochs``: linear warm-up, then cosine decay to 5% of the recipe's
    own base rate; validation and a checkpoint at the end; EMA and end-of-training augmentation switches
    scaled to the short schedule."""
    epochs, lr = budget.epochs, cfg.optim_wrapper.optimizer.lr
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs, val_interval=epochs)
    cfg.val_cfg, cfg.test_cfg = dict(type='ValLoop'), dict(type='TestLoop')
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=budget.warmup_iters),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=epochs * iters_per_epoch, eta_min=lr * 0.05)]
    cfg.optim_wrapper.clip_grad = dict(max_norm=35, norm_type=2)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs, max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=budget.batch_size)
    cfg.pop('load_from', None)
    cfg.pop('resume', None)
    last_epochs = 1  # the recipes' last 5-7% of epochs without mosaic/MixUp, at least one epoch here
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] == 'EMAHook':  # the demo's EMA: settles on about the last 50 steps
            hook.update(momentum=0.02, gamma=50)
        elif hook['type'] == 'PipelineSwitchHook':
            hook['switch_epoch'] = epochs - last_epochs
        elif hook['type'] == 'YOLOXModeSwitchHook':
            hook['num_last_epochs'] = last_epochs
    cfg.train_cfg.pop('dynamic_intervals', None)


def drop_mixup(cfg: Config) -> None:
    """Remove MixUp from every pipeline (mosaic stays)."""
    for pipeline in pipelines(cfg):
        pipeline[:] = [t for t in pipeline if t['type'] not in MIXUP_TYPES]


def set_test_size(cfg: Config, side: int) -> None:
    """Evaluate at ``side`` x ``side`` (recipes test at another size than they train, e.g. YOLOX 416/640)."""
    for pipeline in _pipelines_in([cfg.val_dataloader, cfg.test_dataloader]):
        for transform in pipeline:
            if transform['type'] == 'Resize':
                transform['scale'] = (side, side)
            elif transform['type'] == 'Pad' and 'size' in transform:
                transform['size'] = (side, side)


def short_schedule_config(cfg: Config, data_root: str, budget: Budget, iters_per_epoch: int, seed: int,
                          mixup: bool = True) -> Config:
    """``cfg`` (a COCO recipe) trained from scratch on the shapes data under ``budget``."""
    cfg = copy.deepcopy(cfg)
    rescale_sizes(cfg, budget.image_size / native_size(cfg))
    set_test_size(cfg, budget.image_size)
    point_at_shapes(cfg, data_root, budget.batch_size)
    set_short_schedule(cfg, budget, iters_per_epoch)
    if not mixup:
        drop_mixup(cfg)
    cfg.model.bbox_head.num_classes = len(SHAPES_CLASSES)
    with_predictable_ssd_head(cfg.model)
    cfg.model.backbone.init_cfg = None  # from scratch, every detector alike (no downloads)
    cfg.randomness = dict(seed=seed)
    return cfg


def split_twin(name: str) -> Tuple[str, bool]:
    """``'X (no MixUp)'`` -> ``('X', False)``; ``'X'`` -> ``('X', True)``."""
    return (name[:-len(NO_MIXUP)], False) if name.endswith(NO_MIXUP) else (name, True)


def deployable(work_dir: str, checkpoint: str) -> Tuple[str, str]:
    """The config and checkpoint to evaluate: the fused pair the hook wrote, else the training pair."""
    deploy_checkpoint = deploy_checkpoint_path(checkpoint)
    deploy_config = osp.join(work_dir, DEPLOY_CONFIG_NAME)
    if osp.isfile(deploy_checkpoint) and osp.isfile(deploy_config):
        return deploy_config, deploy_checkpoint
    return osp.join(work_dir, 'config.py'), checkpoint


def recipe_hash(cfg: Config) -> str:
    """What identifies a run's config (tools/train.py rewrites ``config.py`` in its work dir)."""
    return hashlib.sha256(cfg.pretty_text.encode()).hexdigest()


def finished_run(work_dir: str, cfg: Config) -> Optional[Run]:
    """The run recorded in ``work_dir`` if it trained this very config (a rerun skips it), else None."""
    record = osp.join(work_dir, RUN_RECORD)
    if not osp.isfile(record):
        return None
    with open(record) as f:
        saved = json.load(f)
    return Run(**saved['run']) if saved.get('config_sha256') == recipe_hash(cfg) else None


def train_and_evaluate(name: str, cfg: Config, seed: int, work_dir: str) -> Run:
    """Train ``cfg`` (written to ``work_dir/config.py``), evaluate its deploy checkpoint, return the run
    (recorded in ``work_dir``: a rerun of the same config reuses it)."""
    print(f'[{name}, seed {seed}]', flush=True)
    done = finished_run(work_dir, cfg)
    if done is not None:
        print(f'  done before: mAP {done.mAP:.3f} ({work_dir})', flush=True)
        return done
    config = osp.join(work_dir, 'config.py')
    os.makedirs(work_dir, exist_ok=True)
    with open(config, 'w') as f:
        f.write(cfg.pretty_text)
    trained = train(config, work_dir, [])
    eval_config, checkpoint = deployable(work_dir, trained['checkpoint'])
    coco = evaluate(eval_config, checkpoint, work_dir, [], keys=list(METRICS.values()))
    metrics = {name: max(0., coco[key]) for name, key in METRICS.items()}  # -1: no objects of that size
    run = Run(name, seed, metrics['mAP'], metrics['mAP50'], metrics['mAP_s'], checkpoint, eval_config,
              step_time(trained['rows']))
    print(f'  mAP {run.mAP:.3f}, mAP50 {run.mAP50:.3f}, mAP_s {run.mAP_s:.3f}, {run.step_time:.2f} s/iter '
          f'({osp.basename(checkpoint)})', flush=True)
    with open(osp.join(work_dir, RUN_RECORD), 'w') as f:
        json.dump(dict(run=asdict(run), config_sha256=recipe_hash(cfg)), f, indent=2)
    return run


def detector_configs(names: Sequence[str], data_root: str, budget: Budget, iters_per_epoch: int,
                     seed: int) -> Dict[str, Config]:
    """The short-schedule config of every named detector (``DETECTORS`` keys, or a twin without MixUp)."""
    configs = {}
    for name in names:
        base, mixup = split_twin(name)
        if base not in DETECTORS:
            fail(f'unknown detector {name!r}: choose from {", ".join(DETECTORS)} (add "{NO_MIXUP}" for a '
                 'twin without MixUp)')
        configs[name] = short_schedule_config(read_config(DETECTORS[base]), data_root, budget, iters_per_epoch,
                                              seed, mixup)
    return configs


def mean_by_name(runs: Sequence[Run], field: str) -> Dict[str, float]:
    values: Dict[str, List[float]] = {}
    for run in runs:
        values.setdefault(run.name, []).append(getattr(run, field))
    return {name: sum(v) / len(v) for name, v in values.items()}


def pareto_front(points: Dict[str, Tuple[float, float]]) -> List[str]:
    """Names whose (latency, mAP) no other point beats in both (lower latency, higher mAP)."""
    return [name for name, (lat, acc) in points.items()
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for l2, a2 in points.values())]


def plot_front(points: Dict[str, Tuple[float, float]], front: Sequence[str], path: str, xlabel: str) -> None:
    """mAP against latency, the front joined and labelled (a PNG, no pyplot state)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, (lat, acc) in points.items():
        mine = 'GhostNetV3' in name
        ax.scatter([lat], [acc], marker='o' if mine else 's', color='tab:red' if mine else 'tab:blue')
        ax.annotate(name, (lat, acc), textcoords='offset points', xytext=(5, 4), fontsize=8)
    line = sorted(points[n] for n in front)
    ax.plot([p[0] for p in line], [p[1] for p in line], '--', color='grey', label='Pareto front')
    ax.set(xlabel=xlabel, ylabel='shapes bbox mAP (mean of seeds)', title='Accuracy against CPU latency')
    ax.grid(alpha=0.3)
    ax.margins(x=0.3, y=0.1)  # room for the labels
    ax.legend(loc='upper left')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _fmt(value: Optional[float], spec: str = '.3f') -> str:
    return '-' if value is None else format(value, spec)


def table(runs: Sequence[Run], latency: Dict[str, Dict[str, float]], front: Sequence[str]) -> str:
    """Markdown: one row per detector, mAP per seed and mean, latencies, on the front or not."""
    seeds = sorted({r.seed for r in runs})
    header = ['detector', 'params M', 'GMACs', *(f'mAP s{s}' for s in seeds), 'mAP', 'mAP50', 'mAP_s',
              'eager ms', 'ORT ms', 'end-to-end ms', 'front']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    means = {f: mean_by_name(runs, f) for f in ('mAP', 'mAP50', 'mAP_s')}
    for name in means['mAP']:
        per_seed = {r.seed: r.mAP for r in runs if r.name == name}
        timed = latency.get(name, {})
        cells = [name, _fmt(timed.get('params_m'), '.2f'), _fmt(timed.get('gmacs'), '.2f'),
                 *(_fmt(per_seed.get(s)) for s in seeds), _fmt(means['mAP'][name]), _fmt(means['mAP50'][name]),
                 _fmt(means['mAP_s'][name]), *(_fmt(timed.get(key), '.1f') for key in ('eager', 'onnx', 'end_to_end')),
                 'yes' if name in front else '']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
