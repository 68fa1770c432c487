"""Numerical parity with timm's GhostNetV3 (the reference implementation, random init + random BN)."""
import pytest
import torch

timm = pytest.importorskip('timm')

from ghostdet.models import GhostNetV3  # noqa: E402
from ghostdet.testing import max_rel_diff, randomize_bn  # noqa: E402
from ghostdet.utils.benchmark import TimmStageEnds  # noqa: E402
from ghostdet.weights import convert_to_ghostdet  # noqa: E402

TIMM_NAMES = {0.5: 'ghostnetv3_050', 1.0: 'ghostnetv3_100', 1.3: 'ghostnetv3_130', 1.6: 'ghostnetv3_160'}


@pytest.fixture(scope='module', params=sorted(TIMM_NAMES))
def pair(request):
    torch.manual_seed(0)
    width = request.param
    reference = randomize_bn(timm.create_model(TIMM_NAMES[width])).eval()
    ours = GhostNetV3(width, out_indices=tuple(range(6))).eval()
    ours.load_state_dict(convert_to_ghostdet(reference.state_dict()), strict=True)
    fused = GhostNetV3(width, out_indices=tuple(range(6))).eval()
    fused.load_state_dict(ours.state_dict())
    fused.switch_to_deploy()
    return reference, ours, fused


@pytest.mark.parametrize('size', [(224, 224), (160, 96), (97, 131)])
def test_stage_ends_equal_timm(pair, size):
    reference, ours, fused = pair
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = TimmStageEnds(reference, out_indices=range(6))(x)
        for a, b, c in zip(expected, ours(x), fused(x)):
            assert a.shape == b.shape == c.shape
            assert max_rel_diff(a, b) < 1e-5
            assert max_rel_diff(a, c) < 1e-5


def test_fused_timm_weights_load_into_deploy_model():
    reference = randomize_bn(timm.create_model('ghostnetv3_100')).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = TimmStageEnds(reference, out_indices=range(6))(x)
    fused_reference = timm.utils.model.reparameterize_model(reference)
    ours = GhostNetV3(out_indices=tuple(range(6)), deploy=True).eval()
    ours.load_state_dict(convert_to_ghostdet(fused_reference.state_dict()), strict=True)
    with torch.no_grad():
        for a, b in zip(expected, ours(x)):
            assert max_rel_diff(a, b) < 1e-5
