"""ghostdet.utils.benchmark on real models: subjects and their forms, the timm stage-end wrapper, the
round-robin timer's order, a whole (tiny) measurement and its report. No timing is asserted."""
import csv
import importlib.util

import pytest
import torch

from ghostdet.models import GhostNetV3
from ghostdet.utils.benchmark import (STAGE_ENDS, Row, Settings, Stats, TimmStageEnds, backbone_subjects,
                                      build_variants, measure, time_interleaved, write_report)

HAS_TIMM = importlib.util.find_spec('timm') is not None


def test_backbones_know_their_peers_and_unknown_names_are_refused():
    roles = ['resnet18', 'mobilenetv2', 'timm'] if HAS_TIMM else ['resnet18', 'mobilenetv2']
    subjects = backbone_subjects(['ghostnetv3-0.5x', 'ghostnetv3-1.0x'], roles)
    names = [s.name for s in subjects]
    assert names[:4] == ['ghostnetv3-0.5x', 'ghostnetv3-1.0x', 'resnet18', 'mobilenetv2-1.0x']
    assert [s.is_peer for s in subjects] == [False, False] + [True] * (len(subjects) - 2)
    expected = {'resnet18': 'resnet18', 'mobilenetv2': 'mobilenetv2-1.0x'}
    if HAS_TIMM:
        expected['timm'] = 'timm-ghostnetv3-0.5x'
        assert names[4:] == ['timm-ghostnetv3-0.5x', 'timm-ghostnetv3-1.0x']
    assert subjects[0].refs == expected
    with pytest.raises(ValueError, match="unknown backbone 'ghostnet-1.0x'"):
        backbone_subjects(['ghostnet-1.0x'], roles)


def test_forms_are_built_in_eval_mode():
    ghostnet, resnet, mobilenet = backbone_subjects(['ghostnetv3-0.5x'], ['resnet18', 'mobilenetv2'])
    train, fused = build_variants(ghostnet)
    assert (train.form, fused.form) == ('train', 'fused') and fused.model is not train.model
    assert sum(p.numel() for p in fused.model.parameters()) < sum(p.numel() for p in train.model.parameters())
    # mmdet's MobileNetV2.train() returns None: nothing may chain on it.
    variants = [train, fused, *build_variants(resnet), *build_variants(mobilenet)]
    assert [v.form for v in variants[2:]] == ['plain', 'plain']
    assert not any(m.training for v in variants for m in v.model.modules())


@pytest.mark.skipif(not HAS_TIMM, reason='timm missing')
def test_timm_stage_ends_have_ghostdet_shapes():
    import timm
    x = torch.randn(1, 3, 96, 64)
    net = timm.create_model('ghostnetv3_050').eval()
    for out_indices in (STAGE_ENDS, tuple(range(6))):
        ours = GhostNetV3(widen_factor=0.5, out_indices=out_indices).eval()
        with torch.no_grad():
            assert [t.shape for t in TimmStageEnds(net, out_indices)(x)] == [t.shape for t in ours(x)]


def test_timer_runs_round_robin_warmup_first():
    calls = []
    stats = time_interleaved({key: (lambda key=key: calls.append(key)) for key in 'ab'}, warmup=1, repeats=2)
    assert calls == ['a', 'b'] * 3
    assert set(stats) == {'a', 'b'} and all(isinstance(s, Stats) for s in stats.values())
    assert Stats.of([0.001, 0.002, 0.003, 0.004, 0.005]) == Stats(3.0, 1.4, 4.6)


def test_measure_and_report_a_backbone_with_onnx(tmp_path):
    pytest.importorskip('onnxruntime')
    subjects = backbone_subjects(['ghostnetv3-0.5x'], ['mobilenetv2'])
    settings = Settings([(128, 128)], ['default', 'channels_last'], threads=1, warmup=0, repeats=1,
                        step_repeats=1, onnx=True)
    rows = measure(subjects, settings, str(tmp_path))
    assert [(r.model, r.form, r.layout) for r in rows] == [
        ('ghostnetv3-0.5x', 'train', 'default'), ('ghostnetv3-0.5x', 'train', 'channels_last'),
        ('ghostnetv3-0.5x', 'fused', 'default'), ('ghostnetv3-0.5x', 'fused', 'channels_last'),
        ('ghostnetv3-0.5x', 'onnx', 'ort'), ('mobilenetv2-1.0x', 'plain', 'default'),
        ('mobilenetv2-1.0x', 'plain', 'channels_last'), ('mobilenetv2-1.0x', 'onnx', 'ort')]
    assert all(r.latency for r in rows) and [bool(r.step) for r in rows] == [r.form in ('train', 'plain') for r in rows]
    assert rows[4].gmacs == rows[2].gmacs < rows[0].gmacs  # onnx = fused model; train counted branch by branch
    # Ratios for ghostdet's rows, against the peer in the same layout (onnxruntime: the eager default).
    assert set(rows[0].ratios) == {'lat/MBv2'} and not any(r.ratios for r in rows[5:])
    for mine, peer in ((rows[1], rows[6]), (rows[4], rows[5])):
        assert mine.ratios['lat/MBv2'] == pytest.approx(mine.latency.median / peer.latency.median)

    text = write_report(rows, str(tmp_path / 'out'), settings, ((0.5, 0.5, 0.5), (1., 1., 1.)), 12.)
    assert '| ghostnetv3-0.5x' in text and 'load average (1/5/15 min) before 0.50/0.50/0.50' in text
    assert (tmp_path / 'out.md').read_text() == text
    with open(tmp_path / 'out.csv') as f:
        table = list(csv.DictReader(f))
    assert [r['layout'] for r in table] == [r.layout for r in rows] and list(table[0])[-1] == 'lat/MBv2'
    assert int(table[0]['macs']) == round(rows[0].gmacs * 1e9)
    assert (tmp_path / 'out.png').read_bytes()[:4] == b'\x89PNG'


def test_report_of_rows_without_train_steps(tmp_path):
    rows = [Row('a', 'plain', '64x64', 'default', 1.0, 0.5, False, latency=Stats(2., 1., 3.))]
    write_report(rows, str(tmp_path / 'out'), Settings([(64, 64)]), ((0., 0., 0.), (0., 0., 0.)), 1.)
    with open(tmp_path / 'out.csv') as f:
        (row, ) = csv.DictReader(f)
    assert (row['params'], row['macs'], row['latency_ms_median'], row['step_ms_median']) == \
        ('1000000', '500000000', '2.0', '')
