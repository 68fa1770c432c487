"""ghostdet.utils.logs: MMEngine's scalars.json found from a run's log_dir or from its work dir."""
import json

import pytest

from ghostdet.utils.logs import read_scalars, scalars_file, training_records

TRAIN = {'lr': 0.01, 'loss': 1.5, 'time': 0.4, 'iter': 1, 'step': 1}
VAL = {'coco/bbox_mAP': 0.25, 'step': 1}


def write_run(work_dir, timestamp, records):
    path = work_dir / timestamp / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    path.write_text(''.join(json.dumps(record) + '\n' for record in records) + '\n')
    return path


def test_a_work_dir_stands_for_its_latest_run(tmp_path):
    write_run(tmp_path, '20240101_120000', [TRAIN])
    latest = write_run(tmp_path, '20240102_090000', [TRAIN, VAL])
    assert scalars_file(str(tmp_path)) == str(latest)
    assert read_scalars(str(tmp_path)) == [TRAIN, VAL]
    assert read_scalars(str(tmp_path / '20240101_120000')) == [TRAIN]  # a log_dir
    assert training_records(read_scalars(str(tmp_path))) == [TRAIN]


def test_no_log_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_scalars(str(tmp_path))
