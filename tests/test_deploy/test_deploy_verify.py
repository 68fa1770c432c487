"""ghostdet.deploy.verify: one output naming and one difference type for both comparisons (fused vs
unfused, onnxruntime vs PyTorch), and branch-by-branch reference runs that leave the model as it was."""
import copy

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

import ghostdet  # noqa: F401
from ghostdet.deploy import (OutputDiff, branch_by_branch, build_cpu_model, compare_outputs, format_diffs,
                             fuse_model, output_names)
from ghostdet.models import GhostNetV3
from ghostdet.testing import detector_config, randomize_bn


@pytest.fixture(scope='module')
def fcos() -> torch.nn.Module:
    init_default_scope('mmdet')
    torch.manual_seed(0)  # a module fixture is set up before the autouse seed: its weights, not the test order
    return randomize_bn(build_cpu_model(detector_config('fcos', 'unused/', 'unused/').model))


def test_fused_vs_unfused_uses_the_onnx_names(fcos):
    fused = copy.deepcopy(fcos)
    assert fuse_model(fused) > 0
    diffs = compare_outputs(fcos, fused, [(96, 160)])
    with torch.no_grad():
        names = output_names(fused._forward(torch.zeros(1, 3, 96, 160)))
    groups = ('cls_score', 'bbox_pred', 'score_factor')
    assert [d.name for d in diffs] == names == [f'{group}_{level}' for group in groups for level in range(5)]
    assert {d.input_shape for d in diffs} == {(1, 3, 96, 160)}
    assert max(d.rel for d in diffs) <= 1e-4


def test_names_of_a_backbone_and_of_a_single_tensor():
    backbone = GhostNetV3(widen_factor=0.5, out_indices=(2, 3)).eval()
    with torch.no_grad():
        assert output_names(backbone(torch.zeros(1, 3, 64, 64))) == ['output_0', 'output_1']
    assert output_names(torch.zeros(1)) == ['output']


def test_branch_by_branch_restores_the_forward(fcos):
    blocks = [m for m in fcos.modules() if hasattr(m, 'forward_branches')]
    assert blocks
    with branch_by_branch(fcos):
        assert all('forward' in vars(b) for b in blocks)
    assert not any('forward' in vars(b) for b in blocks)


def test_output_diff_and_its_table():
    expected = np.array([[2., -4.], [1., 0.]], dtype=np.float32)
    diff = OutputDiff.between((2, 3, 64, 96), 'bbox_pred_0', expected, expected + np.float32(0.5))
    assert diff == OutputDiff((2, 3, 64, 96), 'bbox_pred_0', 0.5, 0.125)
    empty = OutputDiff.between((1, 3, 64, 64), 'dets', np.zeros((0, 5)), np.zeros((0, 5)))
    assert (empty.abs, empty.rel) == (0., 0.)  # no detections: nothing differs
    header, row = format_diffs([diff]).splitlines()
    assert header.split()[:2] == ['input', '(n'] and row.split() == ['2', 'x', '64', 'x', '96', 'bbox_pred_0',
                                                                     '5.000e-01', '1.250e-01']
