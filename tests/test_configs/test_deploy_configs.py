"""Every trained COCO config has its deploy twin (``<folder>/deploy/<name>_deploy.py``, as mmpretrain
places them) and the twin builds exactly what ``to_deploy_config`` makes of the training config; the
product's two entry points are their mmdet-named configs under another name."""
from pathlib import Path

import pytest
from mmengine.config import Config

import ghostdet  # noqa: F401
from ghostdet.deploy import to_deploy_config

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / 'configs'
# The product fixes these names; each is a one-line alias of its mmdet-named config.
ENTRY_POINTS = {
    'retinanet_ghostnetv3_coco.py': 'retinanet/retinanet_ghostnetv3-1.0x_fpn_1x_coco.py',
    'fcos_ghostnetv3_coco.py': 'fcos/fcos_ghostnetv3-1.0x_fpn_gn-head_1x_coco.py',
}
TRAINED = sorted(str(p.relative_to(CONFIGS)) for folder in ('retinanet', 'fcos', 'rtmdet', 'yolox')
                 for p in (CONFIGS / folder).glob('*.py'))
DEPLOY = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob('*/deploy/*.py'))


def deploy_twin(config: str) -> Path:
    path = CONFIGS / ENTRY_POINTS.get(config, config)
    return path.parent / 'deploy' / f'{path.stem}_deploy.py'


def test_configs_are_found():
    assert len(TRAINED) == 13 and len(DEPLOY) == 13


@pytest.mark.parametrize('alias', sorted(ENTRY_POINTS))
def test_entry_point_is_its_mmdet_named_config(alias):
    assert Config.fromfile(CONFIGS / alias).to_dict() == \
        Config.fromfile(CONFIGS / ENTRY_POINTS[alias]).to_dict()


@pytest.mark.parametrize('config', TRAINED + sorted(ENTRY_POINTS))
def test_deploy_twin_builds_the_fused_form(config):
    twin = deploy_twin(config)
    assert twin.is_file(), f'{config} has no deploy config {twin.relative_to(ROOT)}'
    expected = to_deploy_config(Config.fromfile(CONFIGS / config))
    deploy = Config.fromfile(twin)
    assert deploy.model.to_dict() == expected.model.to_dict()
    assert deploy.custom_hooks == expected.custom_hooks
    assert deploy.pretty_text  # written out by tools and hooks: plain data only


@pytest.mark.parametrize('deploy', DEPLOY)
def test_every_deploy_config_has_its_training_config(deploy):
    path = CONFIGS / deploy
    assert path.stem.endswith('_deploy')
    assert (path.parents[1] / f'{path.stem[:-len("_deploy")]}.py').is_file()
