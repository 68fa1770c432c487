"""tools/train.py and tools/test.py: the checks that run before a Runner is built, and CPU DDP setup."""
import os.path as osp
import socket
from argparse import Namespace

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from ghostdet.apis import load_config, require_checkpoint, setup_distributed
from ghostdet.testing import load_tool


def _args(config: str, **kwargs) -> Namespace:
    return Namespace(config=config, launcher='none', cfg_options=None, work_dir=None, **kwargs)


def test_load_config_applies_cli_overrides(tmp_path):
    config = tmp_path / 'my_model.py'
    config.write_text("model = dict(type='X', depth=1)\n")
    cfg = load_config(_args(str(config)))
    assert cfg.work_dir == osp.join('./work_dirs', 'my_model') and cfg.launcher == 'none'
    args = _args(str(config))
    args.cfg_options, args.work_dir = {'model.depth': 2}, str(tmp_path / 'wd')
    cfg = load_config(args)
    assert cfg.model.depth == 2 and cfg.work_dir == str(tmp_path / 'wd')


def test_missing_config_and_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match=r'error: config file .*nope\.py does not exist'):
        load_config(_args(str(tmp_path / 'nope.py')))
    with pytest.raises(SystemExit, match=r'error: checkpoint .*nope\.pth does not exist'):
        require_checkpoint(str(tmp_path / 'nope.pth'))
    require_checkpoint('https://example.com/weights.pth')  # remote: left to MMEngine


def test_resume_needs_a_checkpoint(tmp_path):
    train = load_tool('train')
    cfg = Config(dict(work_dir=str(tmp_path)))
    with pytest.raises(SystemExit, match='no checkpoint to resume from in'):
        train.set_resume(cfg, 'auto')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    with pytest.raises(SystemExit, match=r'checkpoint named in .*last_checkpoint, .*iter_4\.pth does not'):
        train.set_resume(cfg, 'auto')
    with pytest.raises(SystemExit, match=r'--resume: checkpoint .*other\.pth does not exist'):
        train.set_resume(cfg, str(tmp_path / 'other.pth'))

    (tmp_path / 'iter_4.pth').write_bytes(b'')
    train.set_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None  # MMEngine finds it again, as upstream
    train.set_resume(cfg, str(tmp_path / 'iter_4.pth'))
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'iter_4.pth')


def test_amp_needs_a_gpu():
    train = load_tool('train')
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))))
    with pytest.raises(SystemExit, match='--amp trains in mixed precision on a GPU .* no GPU is visible: drop --amp'):
        train.enable_amp(cfg, gpu_visible=False)
    train.enable_amp(cfg, gpu_visible=True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'


def test_default_tta_wraps_the_model_and_flips():
    test = load_tool('test')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackDetInputs')]
    cfg = Config(dict(model=dict(type='RetinaNet'), test_dataloader=dict(dataset=dict(pipeline=pipeline))))
    with pytest.warns(UserWarning, match='tta_model'):
        test.enable_tta(cfg)
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module.type == 'RetinaNet'
    steps = [step['type'] for step in cfg.test_dataloader.dataset.pipeline]
    assert steps == ['LoadImageFromFile', 'TestTimeAug']


def test_pytorch_launcher_needs_torchrun_environment(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SystemExit, match=r"environment variables \['RANK', 'WORLD_SIZE'.*dist_train\.sh"):
        setup_distributed(Config(dict(launcher='pytorch')))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the gloo set-up is for machines without CUDA')
def test_cpu_launcher_starts_gloo_and_ddp_without_device_ids(monkeypatch):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    for key, value in dict(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=600))))
    try:
        setup_distributed(cfg)
        assert torch_dist.is_initialized() and torch_dist.get_backend() == 'gloo'
        assert torch.get_num_threads() == 1
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
        torch.set_num_threads(threads)
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=600)
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
