"""Every config in configs/ loads and builds its model (ImageNet/teacher weights replaced by local files)."""
import importlib
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ghostdet  # noqa: F401
from ghostdet.models import GhostNetV3
from ghostdet.testing import REPO, local_teacher, without_pretrained

ROOT = Path(REPO)
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts)


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
