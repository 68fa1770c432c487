"""Runner checkpoints load with torch's safe unpickler once ghostdet is imported."""
import collections

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from torch.utils.data import Dataset

import ghostdet  # noqa: F401  (installs the safe loading)
from ghostdet.safe_load import UnsafeCheckpointError


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


def make_runner(work_dir, max_epochs, resume=False):
    return Runner(
        model=ToyModel(), work_dir=str(work_dir), resume=resume, log_level='WARNING',
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


def test_unsafe_checkpoint_is_refused_with_reason(tmp_path):
    path = tmp_path / 'unsafe.pth'
    torch.save({'state_dict': {}, 'payload': collections.deque([1])}, path)
    with pytest.raises(UnsafeCheckpointError, match='cannot be loaded safely.*deque'):
        _load_checkpoint(str(path))
