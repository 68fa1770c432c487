"""The one switch of the fast paths: environment variable, programmatic setting and context manager."""
import copy

import pytest
import torch

import ghostdet
from ghostdet import ops
from ghostdet.models import RepConvBN
from ghostdet.testing import RELU, randomize_bn


@pytest.fixture
def pointwise_block() -> RepConvBN:
    return randomize_bn(RepConvBN(8, 16, 1, act_cfg=RELU)).train()


def takes_a_fast_path(block: RepConvBN) -> bool:
    return ops.rep_conv_bn_train(copy.deepcopy(block), torch.randn(2, 8, 5, 5)) is not None


def test_environment_variable_turns_every_fast_path_off(monkeypatch, pointwise_block):
    assert takes_a_fast_path(pointwise_block)
    monkeypatch.setenv(ops.SWITCH, '0')
    assert not ops.use_cpu_kernels() and not ops.kernels_built()
    assert not takes_a_fast_path(pointwise_block)


def test_set_cpu_kernels_overrides_the_environment_until_handed_back(monkeypatch, pointwise_block):
    monkeypatch.setenv(ops.SWITCH, '0')
    try:
        ghostdet.set_cpu_kernels(True)
        assert takes_a_fast_path(pointwise_block)
        monkeypatch.delenv(ops.SWITCH)
        ghostdet.set_cpu_kernels(False)
        assert not takes_a_fast_path(pointwise_block)
    finally:
        ghostdet.set_cpu_kernels(None)
    assert ops.use_cpu_kernels()


def test_context_manager_restores_the_previous_setting(pointwise_block):
    with ghostdet.cpu_kernels(False):
        assert not takes_a_fast_path(pointwise_block)
        with ghostdet.cpu_kernels(True):
            assert takes_a_fast_path(pointwise_block)
        assert not takes_a_fast_path(pointwise_block)
    assert takes_a_fast_path(pointwise_block)


def test_switched_off_the_block_computes_its_branch_sum(pointwise_block):
    x = torch.randn(2, 8, 5, 5)
    reference = copy.deepcopy(pointwise_block)
    with ghostdet.cpu_kernels(False):
        out = pointwise_block(x)
    assert torch.equal(out, reference.act(reference.forward_branches(x)))
