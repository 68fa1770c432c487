"""Mixed precision (``--amp``): the shipped detectors train under autocast, and the fast 1×1 train path
keeps its statistics out of half precision, where they would overflow at COCO sizes."""
import pytest
import torch
from mmengine.config import Config

from mmdet.registry import MODELS

from ghostdet.models import GhostNetV3, RepConvBN
from ghostdet.testing import RELU, loss_and_backward
from ghostdet.testing.detectors import CONFIGS


@pytest.mark.parametrize('kind', ['retinanet', 'fcos'])
def test_shipped_detectors_train_under_bf16_autocast(kind):
    """CPU autocast runs bf16 (fp16 convolutions on a CPU take minutes); a GPU run's fp16 is in tests/test_cuda."""
    cfg = Config.fromfile(CONFIGS[kind])
    cfg.model.backbone.update(widen_factor=0.5, init_cfg=None)
    cfg.model.neck.in_channels = GhostNetV3.out_channels_for(0.5, cfg.model.backbone.out_indices)
    model = MODELS.build(cfg.model)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss_and_backward(model, [(192, 192), (160, 192)])
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    assert all(b.dtype == torch.float32 and torch.isfinite(b).all() for b in buffers)


def test_fp16_one_matmul_statistics_do_not_overflow_at_coco_sizes():
    """537k pixels (stage 0 of an 800×1333 image) of values around 30: their sum of squares is far beyond
    fp16's 65504. The block's batch statistics must still be exact, as float64 computes them."""
    block = RepConvBN(16, 16, 1, num_branches=3, act_cfg=RELU).train()
    x = (torch.randn(1, 16, 733, 733) * 30 + 5).half()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
        out = block(x)
    assert torch.isfinite(out).all()
    pixels = x.double().permute(0, 2, 3, 1).reshape(-1, 16)
    for branch in block.branches:
        bn = branch.bn
        expected = pixels @ branch.conv.weight.double().flatten(1).t()
        momentum = bn.momentum
        assert torch.allclose(bn.running_mean.double(), momentum * expected.mean(0), rtol=1e-5, atol=1e-5)
        assert torch.allclose(bn.running_var.double(), 1 - momentum + momentum * expected.var(0), rtol=1e-5)
