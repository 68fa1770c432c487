"""ghostdet.deploy.checkpoint: the fused model of any config + checkpoint pair, checkpoint reading, and
atomic writes."""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ghostdet  # noqa: F401
from ghostdet.deploy import (WeightsMismatchError, atomic_write, build_cpu_model, fuse_model, load_fused_model,
                             read_checkpoint, to_deploy_config, write_deploy_config)
from ghostdet.testing import detector_config, randomize_bn


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict:
    """A training config + checkpoint, and the deploy config + checkpoint made from them."""
    out = tmp_path_factory.mktemp('deploy')
    paths = {name: str(out / name) for name in ('train.py', 'train.pth', 'deploy.py', 'deploy.pth')}
    detector_config('retinanet', 'unused/', 'unused/').dump(paths['train.py'])
    cfg = Config.fromfile(paths['train.py'])
    init_default_scope('mmdet')
    model = randomize_bn(build_cpu_model(cfg.model))
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), paths['train.pth'])
    fuse_model(model)
    torch.save(dict(state_dict=model.state_dict()), paths['deploy.pth'])  # recognised by its keys
    write_deploy_config(paths['deploy.py'], to_deploy_config(cfg))
    return dict(paths, fused=model.state_dict())


@pytest.mark.parametrize('config, checkpoint, fused_here', [('train.py', 'train.pth', True),
                                                            ('train.py', 'deploy.pth', False),
                                                            ('deploy.py', 'deploy.pth', False)])
def test_every_pair_gives_the_same_fused_model(files, config, checkpoint, fused_here):
    model, num_fused = load_fused_model(Config.fromfile(files[config]), read_checkpoint(files[checkpoint]))
    assert (num_fused > 0) == fused_here
    assert model.state_dict().keys() == files['fused'].keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, files['fused'][key], rtol=1e-5, atol=1e-6)


def test_training_checkpoint_with_deploy_config_says_fuse_first(files):
    with pytest.raises(WeightsMismatchError, match=r'fused model of .*deploy\.py(.|\n)*fuse first'):
        load_fused_model(Config.fromfile(files['deploy.py']), read_checkpoint(files['train.pth']), 'train.pth')


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth does not exist'):
        read_checkpoint(str(tmp_path / 'nope.pth'))


def test_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / 'deploy_config.py')
    atomic_write(path, lambda f: f.write(b'old'))

    def half_write(f):
        f.write(b'new, but')
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        atomic_write(path, half_write)
    assert os.listdir(tmp_path) == ['deploy_config.py'] and open(path, 'rb').read() == b'old'
