"""GhostNetV3 backbone: shapes, parameter counts, fusion, freezing, norm and activation configs, errors."""
import copy

import pytest
import torch
import torch.nn as nn

from ghostdet import ops
from ghostdet.models import GhostNetV3, RepConvBN
from ghostdet.testing import RELU, max_rel_diff, randomize_bn

# Backbone part (stem + 16 bottlenecks) of the reference at 224x224, shared/reference/ghostnetv3.md §4.
REFERENCE_PARAMS = {0.5: (1_459_344, 917_136), 1.0: (5_462_428, 3_480_988),
                    1.3: (9_075_920, 5_806_496), 1.6: (13_631_052, 8_733_130)}
# With the final 1x1 conv (output index 5): train / deploy.
REFERENCE_PARAMS_LAST = {1.0: (5_617_948, 3_636_508), 1.6: (14_027_340, 9_129_418)}


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('width', sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_reference(width):
    train, deploy = REFERENCE_PARAMS[width]
    assert num_params(GhostNetV3(width)) == train
    assert num_params(GhostNetV3(width, deploy=True)) == deploy
    model = GhostNetV3(width)
    model.switch_to_deploy()
    assert num_params(model) == deploy


@pytest.mark.parametrize('width', sorted(REFERENCE_PARAMS_LAST))
def test_parameter_counts_with_last_conv(width):
    train, deploy = REFERENCE_PARAMS_LAST[width]
    assert num_params(GhostNetV3(width, out_indices=(4, 5))) == train
    assert num_params(GhostNetV3(width, out_indices=(4, 5), deploy=True)) == deploy


@pytest.mark.parametrize('width,channels', [
    (0.5, [8, 12, 20, 56, 80, 480]), (1.0, [16, 24, 40, 112, 160, 960]),
    (1.3, [20, 32, 52, 144, 208, 1248]), (1.6, [24, 40, 64, 180, 256, 1536])])
def test_outputs_strides_and_channels(width, channels):
    indices = tuple(range(6))
    assert GhostNetV3.out_channels_for(width, indices) == channels
    model = GhostNetV3(width, out_indices=indices).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == channels == model.out_channels
    assert [o.shape[2:] for o in outs] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3), (2, 3)]


def test_default_out_indices_feed_fpn_start_level_1():
    model = GhostNetV3()
    assert model.out_indices == (1, 2, 3, 4)
    assert model.out_channels == [24, 40, 112, 160]


@pytest.mark.parametrize('width', [0.5, 1.0, 1.3, 1.6, 0.75])
@pytest.mark.parametrize('size', [(64, 64), (97, 131)])
def test_fused_equals_unfused(width, size):
    model = randomize_bn(GhostNetV3(width, out_indices=tuple(range(6)))).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    assert not any(isinstance(m, RepConvBN) and not m.deploy for m in model.modules())
    for a, b in zip(before, after):
        assert max_rel_diff(a, b) < 1e-5


def test_deploy_state_dict_loads_into_deploy_model():
    model = randomize_bn(GhostNetV3()).eval()
    model.switch_to_deploy()
    fresh = GhostNetV3(deploy=True).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), fresh(x)):
            assert torch.equal(a, b)


def test_wrong_form_checkpoints_are_refused_with_advice():
    fused = GhostNetV3(deploy=True).state_dict()
    with pytest.raises(ValueError, match='deploy=True'):
        GhostNetV3().load_state_dict(fused)
    with pytest.raises(ValueError, match='deploy=False'):
        GhostNetV3(deploy=True).load_state_dict(GhostNetV3().state_dict())


@pytest.mark.parametrize('kwargs,match', [
    (dict(widen_factor=0), 'widen_factor'), (dict(widen_factor=-1.0), 'widen_factor'),
    (dict(widen_factor='1.0x'), 'widen_factor'), (dict(out_indices=(1, 6)), 'out_indices'),
    (dict(out_indices=(3, 1)), 'out_indices'), (dict(out_indices=()), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages')])
def test_invalid_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GhostNetV3(**kwargs)


def test_frozen_stages_freeze_params_and_bn():
    model = GhostNetV3(frozen_stages=2)
    model.train()
    frozen = [model.stem, *model.stages[:3]]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(p.requires_grad for stage in model.stages[3:] for p in stage.parameters())
    assert all(m.training for stage in model.stages[3:] for m in stage.modules()
               if isinstance(m, nn.BatchNorm2d))
    model(torch.randn(2, 3, 64, 64))[-1].sum().backward()
    assert all(p.grad is None for module in frozen for p in module.parameters())


def test_norm_eval_keeps_bn_statistics():
    model = GhostNetV3(norm_eval=True)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k}
    model(torch.randn(2, 3, 64, 64))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model.training  # only the BNs are in eval mode


def test_norm_eval_false_updates_bn_statistics():
    model = GhostNetV3().train()
    before = model.stem[1].running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before, model.stem[1].running_mean)


def test_zero_init_residual_starts_every_bottleneck_as_its_shortcut():
    model = GhostNetV3(zero_init_residual=True)
    model.init_weights()
    model.train()
    x = torch.randn(2, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    identity_block, downsampling_block = model.stages[0][0], model.stages[1][0]
    assert torch.equal(identity_block(x), x)
    assert torch.equal(downsampling_block(x), downsampling_block.shortcut(x))
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert identity_block.ghost2.primary.branches[0].bn.weight.grad.abs().sum() > 0  # it still learns


def test_gradient_checkpointing_matches():
    plain = GhostNetV3().train()
    checkpointed = GhostNetV3(with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (plain, checkpointed):
        sum(o.sum() for o in model(x)).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize('kwargs', [dict(kernel_size=1), dict(kernel_size=3, groups=12),
                                    dict(kernel_size=5, stride=2, groups=12), dict(kernel_size=3, groups=3)])
def test_eval_forward_fuses_on_the_fly_exactly(kwargs):
    block = randomize_bn(RepConvBN(12, 12, act_cfg=RELU, **kwargs)).eval()
    x = torch.randn(2, 12, 15, 22)
    with torch.no_grad():
        assert max_rel_diff(block.act(block.forward_branches(x)), block(x)) < 1e-5


@pytest.mark.parametrize('in_channels,out_channels,channels_last', [(8, 12, True), (12, 12, True),
                                                                      (12, 12, False), (80, 8, True)])
def test_train_mode_pointwise_block_matches_branches(in_channels, out_channels, channels_last):
    """The one-matmul train path of 1×1 blocks (batch statistics from the input covariance) gives the
    branches' outputs, gradients and running statistics."""
    fast = randomize_bn(RepConvBN(in_channels, out_channels, 1, act_cfg=RELU)).train()
    reference = RepConvBN(in_channels, out_channels, 1, act_cfg=RELU).train()
    reference.load_state_dict(fast.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(3, in_channels, 9, 14).relu() + 0.3).contiguous(memory_format=fmt)
    fast_path = ops.rep_conv_bn_train(copy.deepcopy(fast), x) is not None
    assert fast_path == (in_channels < 8 * out_channels)
    inputs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [fast(inputs[0]), reference.act(reference.forward_branches(inputs[1]))]
    assert max_rel_diff(outs[1], outs[0]) < 1e-5
    grad = torch.randn_like(outs[0])
    for out in outs:
        out.backward(grad)
    assert max_rel_diff(inputs[1].grad, inputs[0].grad) < 1e-4
    for (name, a), b in zip(fast.named_parameters(), reference.parameters()):
        assert max_rel_diff(b.grad, a.grad) < 1e-4, name
    for (name, a), b in zip(fast.named_buffers(), reference.buffers()):
        assert max_rel_diff(b.float(), a.float()) < 1e-5, name


def test_norm_eval_training_gradients_match_branches():
    block = randomize_bn(RepConvBN(8, 8, 3, groups=8)).eval()
    x = torch.randn(2, 8, 9, 9)
    block(x).square().sum().backward()
    fused_grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    block.forward_branches(x).square().sum().backward()
    for a, b in zip(fused_grads, block.parameters()):
        assert torch.allclose(a, b.grad, rtol=1e-4, atol=1e-6)


def test_channels_last_is_a_layout_not_a_numerics_change():
    nhwc = randomize_bn(GhostNetV3()).eval()
    nchw = GhostNetV3(channels_last=False).eval()
    nchw.load_state_dict(nhwc.state_dict())
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        outs = nhwc(x)
        assert outs[0].is_contiguous(memory_format=torch.channels_last)
        for a, b in zip(outs, nchw(x)):
            assert max_rel_diff(b, a) < 1e-5


def test_bf16_autocast_train_step():
    """Mixed precision (--amp) trains: the 1×1 train path's statistics run in float64, out of autocast's
    reach, and reach the float32 running statistics cast to their dtype (a bf16 blend used to raise)."""
    model = GhostNetV3(0.5).train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(2, 3, 128, 128))
    sum(o.float().sum() for o in outs).backward()
    assert all(o.dtype == torch.bfloat16 for o in outs)
    assert all(torch.isfinite(b).all() and b.dtype != torch.bfloat16 for b in model.buffers())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_every_sync_batchnorm_runs_in_train_mode():
    """After convert_sync_batchnorm (sync_bn='torch' on several GPUs) every BN is a SyncBatchNorm, whose
    statistics span all devices: the fast train paths, which compute BN statistics themselves, step aside."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(GhostNetV3(0.5)).train()
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.SyncBatchNorm)}
    ran = set()
    for name, module in norms.items():
        module.register_forward_hook(lambda module, inputs, output, name=name: ran.add(name))
    model(torch.randn(2, 3, 128, 128))  # not distributed: SyncBatchNorm normalizes like BatchNorm
    assert len(norms) == 325 and ran == set(norms)


def test_sync_bn_norm_cfg_trains_every_norm_as_sync_batchnorm():
    """norm_cfg=SyncBN (several GPUs) builds SyncBatchNorm everywhere: same keys as BN, fast paths aside."""
    model = GhostNetV3(0.5, norm_cfg=dict(type='SyncBN')).train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 325 and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert model.state_dict().keys() == GhostNetV3(0.5).state_dict().keys()
    x = torch.randn(2, 3, 128, 128)
    assert not any(ops.rep_conv_bn_train(copy.deepcopy(m), torch.randn(2, m.in_channels, 8, 8)) is not None
                   for m in model.modules() if isinstance(m, RepConvBN))
    sum(o.sum() for o in model(x)).backward()
    model.eval()
    model.switch_to_deploy()  # SyncBatchNorm has running statistics: it folds like BN
    assert all(torch.isfinite(o).all() for o in model(x))


def test_group_norm_trains_but_refuses_to_fuse():
    """GN has no running statistics to fold: the backbone trains and evaluates branch by branch, and fusing
    it says why it cannot."""
    gn = dict(type='GN', num_groups=2)
    model = GhostNetV3(0.5, norm_cfg=gn).train()
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    x = torch.randn(1, 3, 64, 64)
    sum(o.sum() for o in model(x)).backward()
    model.eval()
    with torch.no_grad():
        assert all(torch.isfinite(o).all() for o in model(x))
    with pytest.raises(TypeError, match="norm_cfg=dict\\(type='BN'\\)"):
        model.switch_to_deploy()


def test_act_cfg_sets_the_backbone_activation():
    model = GhostNetV3(0.5, act_cfg=dict(type='HSwish'), out_indices=(4, 5)).eval()
    assert isinstance(model.stem[2], nn.Hardswish) and isinstance(model.last_conv[2], nn.Hardswish)
    assert isinstance(model.stages[1][0].ghost1.primary.act, nn.Hardswish)
    assert isinstance(model.stages[1][0].ghost2.primary.act, nn.Identity)  # the projecting ghost module
    fused = copy.deepcopy(model)
    fused.switch_to_deploy()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), fused(x)):
            assert max_rel_diff(a, b) < 1e-5
