"""On a CUDA GPU: the shipped detectors train and validate (mmcv's CUDA NMS and focal loss), with EMA and
the fuse-on-save hook, in fp32, fp16 and bf16; fused equals unfused; what a GPU wrote loads on a CPU.

Skipped without a GPU. On a GPU machine every Runner-based test elsewhere also runs on the GPU (MMEngine
puts the model there); these check what only a GPU run shows.
"""
import pytest
import torch

import ghostdet  # noqa: F401  (registers the hook, safe loading)
from ghostdet.deploy import compare_outputs, fuse_model
from ghostdet.models import GhostNetV3
from ghostdet.testing import detector_config, randomize_bn, saved_pair, train
from ghostdet.utils.mmcv_build import installed_ops_have_cuda

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (none is visible)'),
    pytest.mark.slow,
]


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 convolutions and matmuls round to 10 bits: compare fused and unfused in true float32."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def test_mmcv_ops_have_cuda_kernels():
    assert installed_ops_have_cuda(), 'CPU-only mmcv ops on a GPU machine: GHOSTDET_CUDA=1 make install'


@pytest.mark.parametrize('kind, precision', [('retinanet', None), ('fcos', None), ('retinanet', 'float16'),
                                             ('fcos', 'bfloat16')])
def test_detector_trains_and_validates_on_the_gpu(kind, precision, data_root, tmp_path):
    cfg = detector_config(kind, data_root, str(tmp_path), max_epochs=2)
    cfg.train_cfg.val_interval = 1
    cfg.custom_hooks.insert(0, dict(type='EMAHook', momentum=0.5, update_buffers=True, priority=49))
    if precision is not None:
        cfg.optim_wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic', dtype=precision)
    runner = train(cfg)
    assert next(runner.model.parameters()).is_cuda
    assert 'val/coco/bbox_mAP' in runner.message_hub.log_scalars
    buffers = [b for b in runner.model.buffers() if b.is_floating_point()]
    assert all(b.dtype == torch.float32 and torch.isfinite(b).all() for b in buffers)

    # The GPU-written checkpoints load into CPU models; the deploy one (fused EMA weights) equals the unfused.
    unfused, fused = saved_pair(str(tmp_path), cfg.model, 'epoch_2')
    # 1e-3: after a few EMA steps both float32 forms are up to 3e-4 from float64 (FCOS, measured on a CPU).
    assert max(d.rel for d in compare_outputs(unfused, fused, [(192, 192), (193, 257)])) < 1e-3


def test_fused_backbone_equals_unfused_on_the_gpu():
    model = randomize_bn(GhostNetV3(1.0)).cuda().eval()
    x = torch.randn(2, 3, 224, 288, device='cuda')
    with torch.no_grad():
        expected = [o.double() for o in model(x)]
        fuse_model(model)
        actual = model(x)
    for a, b in zip(actual, expected):
        assert ((a.double() - b).abs().max() / b.abs().max()) < 1e-4


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_backbone_trains_under_cuda_autocast(dtype):
    model = GhostNetV3(1.0).cuda().train()
    with torch.autocast('cuda', dtype=dtype):
        outs = model(torch.randn(2, 3, 640, 640, device='cuda'))
    sum(o.float().sum() for o in outs).backward()
    assert all(torch.isfinite(b).all() and b.dtype == torch.float32 for b in model.buffers() if b.is_floating_point())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
