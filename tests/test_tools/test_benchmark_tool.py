"""tools/benchmark.py on tiny settings: it writes CSV, Markdown and PNG with the expected rows and ratio
columns (timings are not asserted), and refuses bad input clearly."""
import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from ghostdet.testing import detector_config, load_tool

benchmark = load_tool('benchmark')

# 128 px is the smallest size at which a batch-1 train step works: GhostNetV3's DFC attention pools
# the stride-32 map once more, and BN in train mode needs more than one value per channel.
TINY = ['--sizes', '128x128', '--warmup', '0', '--repeats', '1', '--step-repeats', '1', '--threads', '1']


@pytest.fixture(autouse=True)
def _keep_threads():
    """The tool sets the process-wide thread count."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _rows(out_dir: Path) -> list:
    with open(out_dir / 'benchmark.csv') as f:
        return list(csv.DictReader(f))


def test_backbone_and_peers_write_csv_markdown_png(tmp_path):
    has_timm = importlib.util.find_spec('timm') is not None
    peers = ['mobilenetv2', 'timm-mobilenetv2', 'timm'] if has_timm else ['mobilenetv2']
    benchmark.main(['--backbones', 'ghostnetv3-0.5x', '--peers', *peers, *TINY, '--out-dir', str(tmp_path)])

    rows = _rows(tmp_path)
    expected = [('ghostnetv3-0.5x', 'train'), ('ghostnetv3-0.5x', 'fused'), ('mobilenetv2-1.0x', 'plain')]
    expected += [('timm-mobilenetv2-1.0x', 'plain'), ('timm-ghostnetv3-0.5x', 'train'),
                 ('timm-ghostnetv3-0.5x', 'fused')] if has_timm else []
    assert [(r['model'], r['form']) for r in rows] == expected
    assert all(r['size'] == '128x128' and r['layout'] == 'default' for r in rows)
    assert all(int(r['params']) > 0 and int(r['macs']) > 0 and float(r['latency_ms_median']) > 0 for r in rows)
    # Fusing removes the branches' parameters and MACs (the train form counted branch by branch, as
    # tools/get_flops.py counts it); the train step is timed for train/plain forms.
    train, fused = rows[:2]
    assert int(fused['params']) < int(train['params']) and int(fused['macs']) < int(train['macs'])
    if has_timm:  # the same network, counted alike in both forms
        assert [(r['params'], r['macs']) for r in rows[4:]] == [(r['params'], r['macs']) for r in rows[:2]]
    assert [bool(r['step_ms_median']) for r in rows] == [r['form'] != 'fused' for r in rows]
    # Ratios for ghostdet's rows only, against each peer measured.
    ratio_cols = ['lat/MBv2'] + (['lat/timm-MBv2', 'lat/timm-train', 'lat/timm-fused', 'step/timm-train']
                                 if has_timm else [])
    assert [c for c in rows[0] if '/' in c] == ratio_cols
    assert all(train[c] for c in ratio_cols) and fused['lat/MBv2'] and not fused.get('step/timm-train')
    assert not any(r[c] for r in rows[2:] for c in ratio_cols)

    markdown = (tmp_path / 'benchmark.md').read_text()
    assert '| ghostnetv3-0.5x' in markdown and 'GMACs' in markdown and 'load average' in markdown
    assert 'ghost modules at inference): C++ kernels' in markdown  # the fast paths are what gets timed
    assert (tmp_path / 'benchmark.png').read_bytes()[:4] == b'\x89PNG'


@pytest.mark.slow
def test_detector_config_with_onnx_and_channels_last(tmp_path):
    config = tmp_path / 'retinanet_tiny.py'
    detector_config('retinanet', 'unused/', 'unused/').dump(str(config))
    benchmark.main(['--backbones', '--configs', str(config), '--onnx', '--memory-formats', 'default',
                    'channels_last', *TINY, '--out-dir', str(tmp_path)])
    rows = _rows(tmp_path)
    assert [(r['model'], r['form'], r['layout']) for r in rows] == [
        ('retinanet_tiny', 'train', 'default'), ('retinanet_tiny', 'train', 'channels_last'),
        ('retinanet_tiny', 'fused', 'default'), ('retinanet_tiny', 'fused', 'channels_last'),
        ('retinanet_tiny', 'onnx', 'ort')]
    assert all(float(r['latency_ms_median']) > 0 for r in rows)
    assert rows[-1]['macs'] == rows[2]['macs']  # the ONNX model is the fused one


@pytest.mark.parametrize('steps', ['0', '1'])
def test_ssdlite_runs_with_and_without_train_steps(tmp_path, steps, capsys):
    """SSDLite's last maps are 1x1 at 320x320: a batch-1 train step cannot run there (BN over one value
    per channel), so it is left out with a note; inference, onnxruntime and the end-to-end time (mmdet
    3.3.0's SSDHead cannot predict: PredictableSSDHead) still run."""
    pytest.importorskip('onnxruntime')
    benchmark.main(['--backbones', '--configs', 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py',
                    '--onnx', '--end-to-end', *TINY, '--sizes', '320x320', '--step-repeats', steps,
                    '--out-dir', str(tmp_path)])
    rows = _rows(tmp_path)
    assert [(r['form'], r['layout']) for r in rows] == [('plain', 'default'), ('onnx', 'ort'),
                                                        ('end-to-end', 'default')]
    assert all(float(r['latency_ms_median']) > 0 and not r['step_ms_median'] for r in rows)
    assert ('no train step for' in capsys.readouterr().out) == (steps == '1')


@pytest.mark.parametrize('argv, message', [
    (['--backbones', 'ghostnet-1.0x'], 'unknown backbone'),
    (['--backbones', '--configs', 'no/such/config.py'], 'no/such/config.py does not exist'),
])
def test_bad_names_are_explained(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        benchmark.main([*argv, *TINY, '--out-dir', str(tmp_path)])


@pytest.mark.parametrize('argv', [['--sizes', '640'], ['--sizes', '16x16'], ['--backbones'],
                                  ['--repeats', '0']])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as err:
        benchmark.parse_args(argv)
    assert err.value.code == 2 and 'error:' in capsys.readouterr().err
