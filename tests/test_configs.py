"""Every config in configs/ loads and builds its model (ImageNet/teacher weights replaced by local files)."""
import importlib
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ghostdet  # noqa: F401
from ghostdet.models import GhostNetV3
from ghostdet.models.distill.teacher import teacher_model_config

ROOT = Path(__file__).parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts)


def without_pretrained(node):
    """Drop every ``Pretrained`` init_cfg: no ImageNet weights here, a build test needs none."""
    if isinstance(node, dict):
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        for value in node.values():
            without_pretrained(value)
    elif isinstance(node, list):
        for value in node:
            without_pretrained(value)


def local_teacher(model_cfg, tmp_path: Path, registry) -> str:
    """A randomly initialised checkpoint of the config's teacher (model-zoo URLs can't be fetched)."""
    teacher_cfg, _ = teacher_model_config(model_cfg['teacher_config'])
    without_pretrained(teacher_cfg)
    path = tmp_path / 'teacher.pth'
    torch.save({'state_dict': registry.build(teacher_cfg).state_dict()}, path)
    return str(path)


def test_configs_are_found():
    assert {'configs/retinanet_ghostnetv3_coco.py', 'configs/fcos_ghostnetv3_coco.py'} <= set(CONFIGS)


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds(config, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name their bases and teacher configs relative to the repo
    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    without_pretrained(cfg.model)
    if 'teacher_checkpoint' in cfg.model:
        cfg.model.teacher_checkpoint = local_teacher(cfg.model, tmp_path, registry)
    model = registry.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert cfg.pretty_text  # the Runner dumps the config at start: it must be plain data
    backbone = getattr(getattr(model, 'student', model), 'backbone', None)
    neck = getattr(getattr(model, 'student', model), 'neck', None)
    if isinstance(backbone, GhostNetV3) and neck is not None:
        assert list(neck.in_channels) == backbone.out_channels
