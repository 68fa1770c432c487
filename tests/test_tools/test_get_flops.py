"""tools/get_flops.py: per-part parameters and MACs, unfused (branch by branch) and fused; a deploy config
(fused already) and a model with nothing to fuse are counted once."""
from ghostdet.testing import run_tool


def test_get_flops_reports_parts_and_both_forms():
    deploy = 'configs/retinanet/deploy/retinanet_ghostnetv3-0.5x_fpn_1x_coco_deploy.py'
    result = run_tool('get_flops', 'configs/demo/retinanet_ghostnetv3-lite_shapes.py',
                      'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', deploy, '--shape', '128', '128')
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
    forms = {(config, form) for config, form, _ in table}
    assert {form for config, form in forms if config == 'retinanet_r18_fpn_1x_coco.py'} == {'plain'}  # nothing to fuse
    assert {form for config, form in forms if config == deploy.split('/')[-1]} == {'fused'}


def test_missing_config_is_named():
    result = run_tool('get_flops', 'configs/nope.py')
    assert result.returncode != 0 and 'configs/nope.py does not exist' in result.stderr
