"""Runner checkpoints load with torch's safe unpickler once ghostdet is imported, and so do checkpoints
fetched from a URL (a local HTTP server) by every path that fetches one."""
import argparse
import collections
import functools
import http.server
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint
from torch.utils.data import Dataset

import ghostdet  # noqa: F401  (installs the safe loading)
from ghostdet.models import GhostNetV3
from ghostdet.models.distill import TeacherError, build_teacher
from ghostdet.safe_load import CheckpointDownloadError, UnsafeCheckpointError
from ghostdet.testing import REPO, as_saved_on_gpu, official_layout, teacher_model_cfg
from mmdet.registry import MODELS


class ToyData(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.full((4, ), float(i)), y=torch.tensor([i % 2], dtype=torch.float))


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x, y, mode='loss'):
        return dict(loss=((self.linear(x) - y)**2).mean())


def make_runner(work_dir, max_epochs, resume=False, load_from=None):
    return Runner(
        model=ToyModel(), work_dir=str(work_dir), resume=resume, load_from=load_from, log_level='WARNING',
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=4, collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)))


def test_runner_checkpoint_resumes_with_weights_only_loading(tmp_path):
    make_runner(tmp_path, 1).train()
    checkpoint = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)  # no exception = safe
    assert {'state_dict', 'message_hub', 'optimizer', 'meta'} <= set(checkpoint)
    runner = make_runner(tmp_path, 2, resume=True)
    runner.train()
    assert runner.epoch == 2
    assert runner.message_hub.get_scalar('train/loss').data[0].size == 4  # history kept across resume


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks loading on a machine without CUDA')
def test_gpu_written_checkpoint_loads_and_resumes_on_a_cpu(tmp_path):
    make_runner(tmp_path / 'gpu', 1).train()
    as_saved_on_gpu(tmp_path / 'gpu' / 'epoch_1.pth', tmp_path / 'epoch_1.pth')
    with pytest.raises(RuntimeError, match='on a CUDA device'):  # what torch.load alone does
        torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    model = ToyModel()
    load_checkpoint(model, str(tmp_path / 'epoch_1.pth'))  # MMEngine's default: no map_location
    state = torch.load(tmp_path / 'gpu' / 'epoch_1.pth', weights_only=True)['state_dict']
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    runner = make_runner(tmp_path, 2, resume=True)
    runner.train()
    assert runner.epoch == 2


def test_unsafe_checkpoint_is_refused_with_reason(tmp_path):
    path = tmp_path / 'unsafe.pth'
    torch.save({'state_dict': {}, 'payload': collections.deque([1])}, path)
    with pytest.raises(UnsafeCheckpointError, match='cannot be loaded safely.*deque'):
        _load_checkpoint(str(path))


# --- Checkpoints from URLs ---------------------------------------------------------------------------

def plant_marker(path: str) -> dict:
    """What the malicious checkpoint's pickle calls: any code could run here."""
    Path(path).touch()
    return {}


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return plant_marker, (str(self.marker), )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(folder, its URL): a local HTTP server; a private torch hub cache (TORCH_HOME)."""
    root = tmp_path / 'served'
    root.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    for var in ('http_proxy', 'HTTP_PROXY'):
        monkeypatch.delenv(var, raising=False)
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_port}'
    server.shutdown()
    server.server_close()
    thread.join()


def serve(served, name: str, checkpoint: dict) -> str:
    root, base = served
    torch.save(checkpoint, root / name)
    return f'{base}/{name}'


@pytest.fixture
def malicious(served, tmp_path):
    """(URL, marker): a checkpoint whose unpickling creates the marker file (checked here)."""
    marker = tmp_path / 'MARKER'
    url = serve(served, 'evil.pth', {'state_dict': {'w': torch.zeros(1)}, 'meta': Exploit(marker)})
    torch.load(served[0] / 'evil.pth', weights_only=False)  # a full unpickler runs the payload
    assert marker.exists()
    marker.unlink()
    return url, marker


def _refusal(err: BaseException) -> UnsafeCheckpointError:
    while not isinstance(err, UnsafeCheckpointError):
        assert err.__cause__ is not None, f'{type(err).__name__}: {err}'
        err = err.__cause__
    return err


def _load_pretrained(url: str) -> None:
    GhostNetV3(0.5, init_cfg=dict(type='Pretrained', checkpoint=url)).init_weights()


def _load_from(url: str) -> None:  # what the Runner does with load_from (tools/test.py)
    load_checkpoint(ToyModel(), url, map_location='cpu')


def _load_teacher(url: str) -> None:
    build_teacher(dict(model=teacher_model_cfg('retinanet')), url, MODELS)


def _load_open_mmlab_alias(url: str) -> None:
    """open-mmlab:// names resolve through $MMENGINE_HOME/open_mmlab.json (an MMEngine feature)."""
    home = Path(os.environ['MMENGINE_HOME'])
    (home / 'open_mmlab.json').write_text(json.dumps({'ghostdet_test': url}))
    _load_checkpoint('open-mmlab://ghostdet_test', map_location='cpu')


@pytest.mark.parametrize('load', [_load_pretrained, _load_from, _load_teacher, _load_open_mmlab_alias],
                         ids=['backbone-pretrained', 'load_from', 'kd-teacher', 'open-mmlab'])
def test_malicious_url_checkpoint_is_refused(load, malicious, tmp_path, monkeypatch):
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path))
    url, marker = malicious
    with pytest.raises((UnsafeCheckpointError, TeacherError)) as info:
        load(url)
    assert not marker.exists()
    message = str(_refusal(info.value))
    assert url in message and 'test_safe_load.plant_marker' in message
    assert 'cannot be loaded safely' in message and 're-save its downloaded copy' in message


def test_malicious_open_mmlab_file_is_refused(tmp_path, monkeypatch):
    """An open-mmlab:// entry may also name a file under $MMENGINE_HOME (MMEngine reads it itself)."""
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path))
    marker = tmp_path / 'MARKER'
    torch.save({'meta': Exploit(marker)}, tmp_path / 'evil.pth')
    (tmp_path / 'open_mmlab.json').write_text(json.dumps({'ghostdet_evil': 'evil.pth'}))
    with pytest.raises(UnsafeCheckpointError, match='open-mmlab://ghostdet_evil cannot be loaded safely'):
        _load_checkpoint('open-mmlab://ghostdet_evil')
    assert not marker.exists()


def test_official_ghostnetv3_checkpoint_from_url(served):
    """The authors' file: reference key layout, EMA weights and the training ``args`` (a Namespace)."""
    pytest.importorskip('timm')
    import timm
    reference = timm.create_model('ghostnetv3_050')
    ema = official_layout(reference.state_dict())
    url = serve(served, 'ghostnetv3-0.5.pth.tar', {
        'state_dict': {k: torch.zeros_like(v) for k, v in ema.items()}, 'state_dict_ema': ema,
        'epoch': 599, 'args': argparse.Namespace(model='ghostnetv3', width=0.5, lr=0.1)})
    model = GhostNetV3(0.5, out_indices=tuple(range(6)), init_cfg=dict(type='Pretrained', checkpoint=url))
    model.init_weights()
    assert torch.equal(model.state_dict()['stem.0.weight'], reference.conv_stem.weight)
    assert torch.equal(model.state_dict()['last_conv.0.weight'], reference.blocks[9][0].conv.weight)
    assert _load_checkpoint(url)['args'].width == 0.5


def test_runner_checkpoint_from_url(served):
    """Written by ghostdet: HistoryBuffers in the message hub, a numpy scalar (as save_best stores);
    the Runner resumes from its URL."""
    root, base = served
    runner = make_runner(root / 'run', 1)
    runner.message_hub.update_info('best_score', np.float64(0.25))
    runner.train()
    url = f'{base}/run/epoch_1.pth'
    checkpoint = _load_checkpoint(url)
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert checkpoint['message_hub']['runtime_info']['best_score'] == np.float64(0.25)
    model = ToyModel()
    load_checkpoint(model, url)
    assert torch.equal(model.linear.weight, runner.model.linear.weight)
    resumed = make_runner(root / 'resumed', 2, resume=True, load_from=url)
    resumed.train()
    assert resumed.epoch == 2


def test_model_zoo_checkpoint_from_url(served):
    """An mmdet model-zoo file: ``state_dict`` and a ``meta`` of strings, a class tuple, numbers."""
    source = ToyModel()
    meta = dict(env_info='sys.platform: linux\nPython: 3.7.10', config="model = dict(type='RetinaNet')",
                CLASSES=('person', 'bicycle'), mmcv_version='1.3.17', mmdet_version='2.20.0', epoch=12,
                iter=87960, time='Mon Jan 10 12:00:00 2022')
    url = serve(served, 'retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth',
                dict(state_dict=source.state_dict(), meta=meta))
    model = ToyModel()
    assert load_checkpoint(model, url)['meta'] == meta
    assert torch.equal(model.linear.weight, source.linear.weight)


def test_coco_config_trains_from_the_official_release_by_url(served):
    """The 1.0x COCO configs name the authors' ImageNet release: downloaded once into the torch hub cache,
    unpickled safely, converted on load and loaded strictly (no missing or unexpected key)."""
    pytest.importorskip('timm')
    import timm
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(os.path.join(REPO, 'configs', 'retinanet_ghostnetv3_coco.py'))
    official = cfg.model.backbone.init_cfg.checkpoint
    assert official.startswith('https://github.com/huawei-noah/') and official.endswith('/ghostnetv3-1.0.pth.tar')
    reference = timm.create_model('ghostnetv3_100')
    ema = official_layout(reference.state_dict())
    url = serve(served, 'ghostnetv3-1.0.pth.tar', {
        'state_dict': {k: torch.zeros_like(v) for k, v in ema.items()}, 'state_dict_ema': ema, 'epoch': 599,
        'args': argparse.Namespace(model='ghostnetv3', width=1.0)})
    cfg.model.backbone.init_cfg.checkpoint = url  # the same file, served here (no internet in tests)
    init_default_scope('mmdet')
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    assert torch.equal(detector.backbone.state_dict()['stem.0.weight'], reference.conv_stem.weight)
    cached = Path(os.environ['TORCH_HOME']) / 'hub' / 'checkpoints' / 'ghostnetv3-1.0.pth.tar'
    assert cached.is_file()


def test_unreachable_url_says_which_file_to_fetch_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _QuietHandler)
    port = server.server_port
    server.server_close()  # nothing listens there now
    url = f'http://127.0.0.1:{port}/releases/ghostnetv3-1.0.pth.tar'
    model = GhostNetV3(init_cfg=dict(type='Pretrained', checkpoint=url))
    with pytest.raises(CheckpointDownloadError) as error:
        model.init_weights()
    message = str(error.value)
    assert url in message and str(tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'ghostnetv3-1.0.pth.tar') in message
    assert 'model.backbone.init_cfg.checkpoint' in message
