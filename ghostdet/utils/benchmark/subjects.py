"""What the benchmark measures: ghostdet's backbones and detectors, and the peers they are compared
with, each as a way to build it and a way to fuse a copy of it."""
import copy
import importlib.util
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ...deploy import deploy_source_config, fuse_model
from ...models import GhostNetV3
from ...models.heads import with_predictable_ssd_head

STAGE_ENDS = (1, 2, 3, 4)  # GhostNetV3 out_indices: strides 4/8/16/32
MOBILENETV2_STAGE_ENDS = (1, 2, 4, 6)  # mmdet MobileNetV2 layers ending at strides 4/8/16/32
TIMM_STAGE_END_BLOCKS = (0, 2, 4, 6, 8, 9)  # timm GhostNet ``blocks`` ending GhostNetV3 outputs 0..5
PEERS = ('resnet18', 'mobilenetv2', 'timm-mobilenetv2', 'timm')
TIMM_MOBILENETV2 = 'mobilenetv2_100'  # features_only, out_indices (1, 2, 3, 4): strides 4/8/16/32


@dataclass
class Subject:
    """A model to measure: how to build its train form, how to fuse a copy (None: nothing to fuse),
    and its peers by role (``resnet18``/``mobilenetv2``/``timm`` -> subject name)."""
    name: str
    build: Callable[[], nn.Module]
    fuse: Callable[[nn.Module], Optional[nn.Module]]
    is_peer: bool = False
    refs: Dict[str, str] = field(default_factory=dict)
    test_pipeline: Optional[list] = None  # a detector config's, for the end-to-end time


@dataclass
class Variant:
    """One form of one subject, in eval mode."""
    subject: Subject
    form: str
    model: nn.Module


class TimmStageEnds(nn.Module):
    """timm's GhostNet run to the stage ends that GhostNetV3's ``out_indices`` (ascending) select: the
    stem, then its ``blocks`` cut after each of those ends. timm's ``features_only`` taps other points
    (the first block of each stride instead). Shares ``net``'s modules."""

    def __init__(self, net: nn.Module, out_indices: Sequence[int] = STAGE_ENDS) -> None:
        super().__init__()
        ends = [-1, *(TIMM_STAGE_END_BLOCKS[i] for i in out_indices)]
        self.stem = nn.Sequential(net.conv_stem, net.bn1, net.act1)
        self.segments = nn.ModuleList(nn.Sequential(*net.blocks[start + 1:end + 1])
                                      for start, end in zip(ends, ends[1:]))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = [self.stem(x)]
        for segment in self.segments:
            outs.append(segment(outs[-1]))
        return tuple(outs[1:])


def fuse_copy(model: nn.Module) -> Optional[nn.Module]:
    """ghostdet's fusion (any module with ``switch_to_deploy``) on a copy; None if nothing fused."""
    fused = copy.deepcopy(model)
    return fused if fuse_model(fused) else None


def timm_fuse_copy(model: nn.Module) -> nn.Module:
    from timm.utils.model import reparameterize_model
    return reparameterize_model(model)


def width_of(name: str) -> Optional[float]:
    """``ghostnetv3-0.5x`` -> 0.5; None for any other name."""
    match = re.fullmatch(r'ghostnetv3-(\d*\.?\d+)x', name)
    return float(match.group(1)) if match else None


def width_tag(width: float) -> str:
    """0.5 -> '0.5x', 1 -> '1.0x', 0.75 -> '0.75x'."""
    return f'{width:.1f}x' if round(width, 1) == width else f'{width:g}x'


def timm_ghostnet_name(width: float) -> Optional[str]:
    """timm's model name for a width (``ghostnetv3_100``), None without timm or that width."""
    if importlib.util.find_spec('timm') is None:
        return None
    import timm
    name = f'ghostnetv3_{round(width * 100):03d}'
    return name if name in timm.list_models('ghostnetv3_*') else None


def ghostnet_subject(width: float) -> Subject:
    return Subject(f'ghostnetv3-{width_tag(width)}',
                   lambda: GhostNetV3(widen_factor=width, out_indices=STAGE_ENDS), fuse_copy)


def timm_subject(width: float) -> Optional[Subject]:
    """timm's GhostNetV3 of ``width`` run to the same stage ends, None without timm or that width."""
    timm_name = timm_ghostnet_name(width)
    if timm_name is None:
        return None

    def build() -> nn.Module:
        import timm
        return TimmStageEnds(timm.create_model(timm_name))

    return Subject(f'timm-ghostnetv3-{width_tag(width)}', build, timm_fuse_copy, is_peer=True)


def timm_mobilenetv2_subject() -> Optional[Subject]:
    """timm's MobileNetV2-1.0x features to strides 4/8/16/32, None without timm."""
    if importlib.util.find_spec('timm') is None:
        return None

    def build() -> nn.Module:
        import timm
        return timm.create_model(TIMM_MOBILENETV2, features_only=True, out_indices=(1, 2, 3, 4))

    return Subject('timm-mobilenetv2-1.0x', build, fuse_copy, is_peer=True)


def mmdet_subject(name: str, cfg: dict, is_peer: bool = True) -> Subject:
    """A model built by mmdet's registry (the current default scope) from ``cfg``."""
    return Subject(name, lambda: MODELS.build(copy.deepcopy(cfg)), fuse_copy, is_peer=is_peer)


def peer_subjects(roles: Sequence[str], widths: Sequence[float]) -> Dict[Tuple[str, Optional[float]], Subject]:
    """The requested peers keyed by (role, width); width is None for width-independent peers."""
    peers: Dict[Tuple[str, Optional[float]], Subject] = {}
    if 'resnet18' in roles:
        peers['resnet18', None] = mmdet_subject('resnet18', dict(
            type='ResNet', depth=18, out_indices=(0, 1, 2, 3), norm_eval=False))
    if 'mobilenetv2' in roles:
        peers['mobilenetv2', None] = mmdet_subject('mobilenetv2-1.0x', dict(
            type='MobileNetV2', widen_factor=1.0, out_indices=MOBILENETV2_STAGE_ENDS))
    if 'timm-mobilenetv2' in roles:
        subject = timm_mobilenetv2_subject()
        if subject is None:
            print('warning: no timm MobileNetV2 (timm missing)')
        else:
            peers['timm-mobilenetv2', None] = subject
    for width in widths if 'timm' in roles else ():
        subject = timm_subject(width)
        if subject is None:
            print(f'warning: no timm GhostNetV3 of width {width} (timm missing or width unpublished)')
        else:
            peers['timm', width] = subject
    return peers


def backbone_subjects(names: Sequence[str], roles: Sequence[str]) -> List[Subject]:
    """``ghostnetv3-<w>x`` backbones, then their peers, with each backbone's ``refs`` filled in."""
    widths = [width_of(name) for name in names]
    unknown = [name for name, width in zip(names, widths) if width is None]
    if unknown:
        raise ValueError(f'unknown backbone {unknown[0]!r}: use ghostnetv3-<width>x, e.g. ghostnetv3-1.0x')
    peers = peer_subjects(roles, widths)
    ours = []
    for width in widths:
        subject = ghostnet_subject(width)
        subject.refs = {role: peer.name for (role, w), peer in peers.items() if w in (None, width)}
        ours.append(subject)
    unique_peers = {p.name: p for p in peers.values()}
    return ours + list(unique_peers.values())


def config_subject(path: str, cfg: Config) -> Subject:
    """The detector of the config read from ``path`` (which names it); a distiller gives its student."""
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = with_predictable_ssd_head(deploy_source_config(cfg))
    subject = mmdet_subject(osp.splitext(osp.basename(path))[0], model_cfg, is_peer=False)
    subject.test_pipeline = copy.deepcopy(cfg.test_dataloader.dataset.get('pipeline'))
    return subject


def build_variants(subject: Subject) -> List[Variant]:
    """``train`` + ``fused`` forms, or ``plain`` when there is nothing to fuse."""
    model = subject.build()
    model.eval()  # not chained: mmdet's MobileNetV2.train() returns None
    fused = subject.fuse(model)
    if fused is None:
        return [Variant(subject, 'plain', model)]
    fused.eval()
    return [Variant(subject, 'train', model), Variant(subject, 'fused', fused)]
