"""The demo job's steps that need no training: its config on another data root, the curves and the
summary table."""
from pathlib import Path

from PIL import Image

from ghostdet.apis.demo import DEFAULT_CONFIG, demo_config, plot_curves, summary_table

REPO = Path(__file__).parents[2]


def test_demo_config_reads_the_data_root(tmp_path):
    cfg = demo_config(str(REPO / DEFAULT_CONFIG), str(tmp_path / 'work'), 'elsewhere/',
                      {'train_cfg.max_iters': 3})
    assert cfg.work_dir == str(tmp_path / 'work') and cfg.train_cfg.max_iters == 3
    assert all(cfg[f'{split}_dataloader'].dataset.data_root == 'elsewhere/' for split in ('train', 'val', 'test'))
    assert cfg.test_evaluator.ann_file == 'elsewhere/annotations/instances_val.json' == cfg.val_evaluator.ann_file


def test_plot_curves_draws_training_and_validation_records(tmp_path):
    records = [dict(loss=2.0, loss_cls=1.5, loss_bbox=0.5, step=10),
               dict(loss=1.0, loss_cls=0.6, loss_bbox=0.4, step=20),
               {'coco/bbox_mAP': 0.2, 'coco/bbox_mAP_50': 0.5, 'step': 1}]
    path = tmp_path / 'curves.png'
    plot_curves(records, str(path))
    assert Image.open(path).size == (1000, 350)


def test_summary_table():
    rows = [('training checkpoint', {'coco/bbox_mAP': 0.5, 'coco/bbox_mAP_50': 0.75}, (1_230_000, 4_560_000_000),
             'w/iter_2.pth'),
            ('deploy (fused)', {}, (1_000_000, 2_000_000_000), 'w/iter_2_deploy.pth')]
    assert summary_table(rows, (256, 320)).splitlines() == [
        'model                     mAP   mAP50    params  GMACs@256x320  file',
        'training checkpoint     0.500   0.750     1.23M           4.56  w/iter_2.pth',
        'deploy (fused)          0.000   0.000     1.00M           2.00  w/iter_2_deploy.pth']
