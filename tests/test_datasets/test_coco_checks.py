"""CheckedCocoDataset: each kind of bad input gives a clear error, or one warning and a skip."""
import json
import logging
from pathlib import Path
from typing import List, Optional

import pytest
from mmengine.logging import MMLogger
from PIL import Image

from ghostdet.datasets import CheckedCocoDataset
from mmdet.registry import DATASETS

CLASSES = ('circle', 'square')
CATEGORIES = [dict(id=1, name='circle'), dict(id=2, name='square')]


def _ann(ann_id: int, bbox: object, category_id: int = 1, image_id: int = 1) -> dict:
    return dict(id=ann_id, image_id=image_id, category_id=category_id, bbox=bbox, area=100.0, iscrowd=0)


def _write_coco(root: Path,
                annotations: Optional[List[dict]] = None,
                num_images: int = 2,
                drop_key: Optional[str] = None) -> dict:
    """A tiny COCO dataset under ``root``; returns the dataset arguments for it."""
    (root / 'annotations').mkdir(parents=True)
    (root / 'images').mkdir()
    images = [dict(id=i + 1, file_name=f'{i}.png', width=40, height=30) for i in range(num_images)]
    for img in images:
        Image.new('RGB', (40, 30)).save(root / 'images' / img['file_name'])
    if annotations is None:
        annotations = [_ann(1, [5, 5, 10, 10]), _ann(2, [1, 2, 20, 20], 2, 2)]
    coco = dict(images=images, annotations=annotations, categories=CATEGORIES)
    if drop_key is not None:
        del coco[drop_key]
    (root / 'annotations' / 'train.json').write_text(json.dumps(coco))
    return dict(
        data_root=str(root),
        ann_file='annotations/train.json',
        data_prefix=dict(img='images/'),
        metainfo=dict(classes=CLASSES),
        pipeline=[])


class _Records(logging.Handler):

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_logged():
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.INFO)  # an earlier test's Runner may have left a quieter level behind
    handler = _Records()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_good_dataset_builds_from_the_registry(tmp_path, warnings_logged):
    dataset = DATASETS.build(dict(type='CheckedCocoDataset', **_write_coco(tmp_path)))
    assert isinstance(dataset, CheckedCocoDataset)
    assert len(dataset) == 2
    assert [inst['bbox_label'] for inst in dataset[1]['instances']] == [1]
    assert warnings_logged == []


@pytest.mark.parametrize('override, named', [
    (dict(data_root='missing_root'), ('missing_root does not exist', '`data_root`')),
    (dict(ann_file='annotations/nope.json'), ('nope.json does not exist', '`ann_file`')),
    (dict(ann_file=''), ('No annotation file', '`ann_file`')),
    (dict(data_prefix=dict(img='nope/')), ('nope/ does not exist', '`data_prefix')),
])
def test_missing_paths_name_the_path_and_the_config_key(tmp_path, override, named):
    kwargs = dict(_write_coco(tmp_path), **override)
    if 'data_root' in override:
        kwargs['data_root'] = str(tmp_path / override['data_root'])
    with pytest.raises(FileNotFoundError) as info:
        CheckedCocoDataset(**kwargs)
    assert all(part in str(info.value) for part in named), str(info.value)


def test_invalid_json(tmp_path):
    kwargs = _write_coco(tmp_path)
    (tmp_path / 'annotations' / 'train.json').write_text('{"images": [')
    with pytest.raises(ValueError, match=r'train\.json is not valid JSON'):
        CheckedCocoDataset(**kwargs)


def test_top_level_not_an_object(tmp_path):
    kwargs = _write_coco(tmp_path)
    (tmp_path / 'annotations' / 'train.json').write_text('[]')
    with pytest.raises(ValueError, match=r'train\.json is not a COCO file'):
        CheckedCocoDataset(**kwargs)


@pytest.mark.parametrize('key', ['images', 'annotations', 'categories'])
def test_missing_section(tmp_path, key):
    with pytest.raises(ValueError, match=rf"train\.json has no list \['{key}'\]"):
        CheckedCocoDataset(**_write_coco(tmp_path, drop_key=key))


def test_image_entry_without_size(tmp_path):
    kwargs = _write_coco(tmp_path)
    path = tmp_path / 'annotations' / 'train.json'
    coco = json.loads(path.read_text())
    del coco['images'][1]['height']
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r'images\[1\] lack one of the keys'):
        CheckedCocoDataset(**kwargs)


def test_unknown_category_ids_are_named(tmp_path):
    anns = [_ann(1, [5, 5, 10, 10], 7), _ann(2, [5, 5, 10, 10], 2), _ann(3, [5, 5, 10, 10], 9)]
    with pytest.raises(ValueError) as info:
        CheckedCocoDataset(**_write_coco(tmp_path, anns))
    message = str(info.value)
    assert 'category_id 7, 9 not declared' in message
    assert "(1, 'circle'), (2, 'square')" in message


def test_classes_missing_from_the_file(tmp_path):
    kwargs = _write_coco(tmp_path)
    kwargs['metainfo'] = dict(classes=('circle', 'triangle'))
    with pytest.raises(ValueError, match=r"not in the file: \['triangle'\].*metainfo=dict\(classes"):
        CheckedCocoDataset(**kwargs)


def test_broken_boxes_are_skipped_with_one_warning(tmp_path, warnings_logged):
    anns = [
        _ann(1, [5, 5, 10, 10]),
        _ann(2, [float('nan'), 5, 10, 10]),
        _ann(3, [5, 5, -3, 10]),
        _ann(4, [5, 5, 10, 0]),
        _ann(5, [5, 5, 10]),
        _ann(6, [100, 5, 10, 10]),  # right of the 40-px image
        _ann(7, [-20, 5, 10, 10]),  # left of it
        _ann(8, [1, 2, 20, 20], 2, 2),
    ]
    dataset = CheckedCocoDataset(**_write_coco(tmp_path, anns))
    assert [len(dataset[i]['instances']) for i in range(2)] == [1, 1]
    assert len(warnings_logged) == 1
    message = warnings_logged[0]
    assert 'skipped 6 of 8 annotations' in message
    assert 'id 2 bbox [nan, 5, 10, 10] (not finite)' in message
    assert 'id 5 bbox [5, 5, 10] (not 4 numbers)' in message
    assert 'id 6 bbox [100, 5, 10, 10] (outside the image)' in message
    assert 'id 7' not in message  # only the first five are quoted
    assert '(6 in total)' in message


def test_missing_image_files_are_named(tmp_path):
    kwargs = _write_coco(tmp_path, num_images=3)
    (tmp_path / 'images' / '0.png').unlink()
    (tmp_path / 'images' / '2.png').unlink()
    with pytest.raises(FileNotFoundError) as info:
        CheckedCocoDataset(**kwargs)
    message = str(info.value)
    assert '2 of 3 images' in message and '0.png' in message and '2.png' in message
    assert '`data_prefix`' in message
