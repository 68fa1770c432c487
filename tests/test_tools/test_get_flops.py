"""tools/get_flops.py: per-part parameters and MACs, unfused (branch by branch) and fused."""
from ghostdet.testing import run_tool


def test_get_flops_reports_parts_and_both_forms():
    result = run_tool('get_flops', 'configs/demo/retinanet_ghostnetv3-lite_shapes.py',
                      'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', '--shape', '128', '128')
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(('configs/', 'mmdet::'))]
    table = {(r[0].split('/')[-1], r[1], r[2]): (float(r[3]), float(r[4])) for r in rows}
    demo = 'retinanet_ghostnetv3-lite_shapes.py'
    for form in ('train', 'fused'):
        parts = [table[(demo, form, part)] for part in ('backbone', 'neck', 'bbox_head')]
        total = table[(demo, form, 'total')]
        assert abs(sum(p[0] for p in parts) - total[0]) < 0.02 and abs(sum(p[1] for p in parts) - total[1]) < 0.02
    assert table[(demo, 'fused', 'backbone')][0] == 3.48  # the reference's deploy count, in millions
    assert table[(demo, 'train', 'backbone')][1] > table[(demo, 'fused', 'backbone')][1]  # branches cost more
    assert ('retinanet_r18_fpn_1x_coco.py', 'fused', 'total') not in table  # nothing to fuse in ResNet-18


def test_missing_config_is_named():
    result = run_tool('get_flops', 'configs/nope.py')
    assert result.returncode != 0 and 'configs/nope.py does not exist' in result.stderr
