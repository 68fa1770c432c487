"""ghostdet.deploy.nchwc: the channel-padded export copy of a fused GhostNetV3 computes the same outputs,
every ghost module concatenates whole 16-channel blocks, and onnxruntime keeps the backbone's
concatenations in its blocked layout (no layout conversion feeds one)."""
import onnx
import pytest
import torch

from ghostdet.deploy import fuse_model
from ghostdet.deploy.nchwc import BLOCK, Layout, padded_for_nchwc
from ghostdet.deploy.onnx import export_onnx, ort_session
from ghostdet.exactness import randomize_bn
from ghostdet.models import GhostNetV3
from ghostdet.models.backbones.ghostnetv3 import GhostModuleV3

ort = pytest.importorskip('onnxruntime')


def fused_backbone(widen_factor: float, out_indices=(1, 2, 3, 4)) -> GhostNetV3:
    torch.manual_seed(0)
    model = randomize_bn(GhostNetV3(widen_factor=widen_factor, out_indices=out_indices)).eval()
    fuse_model(model)
    return model


def test_layouts():
    assert Layout.ghost(3, 3) == Layout.plain(6)
    assert Layout.ghost(3, 4) == Layout((0, 1, 2, 4, 5, 6), 8)


@pytest.mark.parametrize('widen_factor, out_indices', [(1.0, (1, 2, 3, 4)), (0.5, (0, 2, 4, 5))])
def test_padded_copy_computes_the_same_outputs(widen_factor, out_indices):
    model = fused_backbone(widen_factor, out_indices)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    padded = padded_for_nchwc(model)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected, actual = model(x), padded(x)
    assert [t.shape for t in actual] == [t.shape for t in expected]
    for a, e in zip(actual, expected):
        assert (a - e).abs().max() <= 1e-5 * e.abs().max()
    modules = [m for m in padded.modules() if isinstance(m, GhostModuleV3)]
    # All but the first bottleneck's last module: its identity shortcut adds the stem's unpadded output.
    assert [m.primary.out_channels % BLOCK == 0 for m in modules].count(False) == 1
    assert padded.backbone.stages[0][0].ghost2 is [m for m in modules if m.primary.out_channels % BLOCK][0]
    assert all(m.out_channels == 2 * m.primary.out_channels for m in modules)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes  # the original is left as it was


def test_only_fused_ghostnets_are_padded():
    assert padded_for_nchwc(GhostNetV3(widen_factor=0.5)) is None  # train form
    assert padded_for_nchwc(torch.nn.Conv2d(3, 8, 1)) is None


def _concat_inputs_reordered(path: str, tmp_path) -> int:
    """Layout conversions that feed a backbone Concat in onnxruntime's optimized graph, but for the first
    bottleneck's last module (8-channel halves at 1.0x, left unpadded: see the test above)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
    ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    graph = onnx.load(options.optimized_model_filepath).graph
    producers = {output: node for node in graph.node for output in node.output}
    return sum(producers.get(i) is not None and producers[i].op_type == 'ReorderOutput'
               for node in graph.node if node.op_type == 'Concat' and 'stages.0.0/ghost2' not in node.name
               for i in node.input)


def test_onnxruntime_concatenates_in_its_blocked_layout(tmp_path):
    model = fused_backbone(1.0)
    path = str(tmp_path / 'backbone.onnx')
    export_onnx(model, path, torch.randn(1, 3, 128, 128), static=True)
    assert _concat_inputs_reordered(path, tmp_path) == 0
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = model(x)
    actual = ort_session(path).run(None, {'input': x.numpy()})
    for a, e in zip(actual, expected):
        assert abs(a - e.numpy()).max() <= 1e-4 * e.abs().max().item()
