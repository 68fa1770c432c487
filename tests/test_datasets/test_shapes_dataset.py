"""The synthetic shapes dataset: deterministic, valid COCO, sensible content, atomic and cached."""
import collections
import json
import os
import os.path as osp
from pathlib import Path
from typing import Dict

import pytest
from PIL import Image
from pycocotools.coco import COCO

from ghostdet.datasets import SHAPES_CLASSES, make_shapes_dataset

SMALL = dict(num_train=8, num_val=3, image_size=96, seed=0)


def _read_tree(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    make_shapes_dataset(tmp_path / 'a', **SMALL)
    make_shapes_dataset(tmp_path / 'b', **SMALL)
    other = dict(SMALL, seed=1)
    make_shapes_dataset(tmp_path / 'c', **other)
    a, b, c = (_read_tree(tmp_path / name) for name in 'abc')
    assert sorted(a) == sorted(c) and len(a) == 8 + 3 + 2 + 1
    assert a == b
    assert a['train/000000.png'] != c['train/000000.png']


def test_valid_coco_with_boxes_inside_images(tmp_path):
    info = make_shapes_dataset(tmp_path / 'shapes', **SMALL)
    root = info['data_root']
    for split, num_images in (('train', 8), ('val', 3)):
        coco = COCO(osp.join(root, 'annotations', f'instances_{split}.json'))
        assert [cat['name'] for cat in coco.loadCats(coco.getCatIds())] == list(SHAPES_CLASSES)
        assert min(coco.getCatIds()) == 1
        assert len(coco.getImgIds()) == num_images
        assert len(coco.getAnnIds()) == info['num_annotations'][split]
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(osp.join(root, split, img['file_name'])) as im:
                assert im.size == (img['width'], img['height']) == (96, 96)
                assert im.mode == 'RGB'
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img['id']]))
            assert 1 <= len(anns) <= 14  # 6..14 asked; a crowded image may place fewer
            for ann in anns:
                x, y, w, h = ann['bbox']
                assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96
                # 20..80 px at 256 px, scaled to 96 px (tilted polygons may be a little narrower).
                assert max(w, h) >= 20 * 96 / 256 - 0.01 and max(w, h) <= 80 * 96 / 256 + 0.01
                assert 0 < ann['area'] <= w * h + 0.01 and ann['iscrowd'] == 0


def test_classes_are_balanced(tmp_path):
    info = make_shapes_dataset(tmp_path / 'shapes', num_train=60, num_val=1, image_size=64)
    with open(osp.join(info['data_root'], 'annotations', 'instances_train.json')) as f:
        anns = json.load(f)['annotations']
    counts = collections.Counter(ann['category_id'] for ann in anns)
    assert sorted(counts) == [1, 2, 3]
    assert min(counts.values()) >= 0.25 * len(anns)


def test_reuses_a_complete_dataset_and_replaces_another(tmp_path):
    out = tmp_path / 'shapes'
    assert make_shapes_dataset(out, **SMALL)['generated']
    stamp = os.stat(out / 'train' / '000000.png').st_mtime_ns
    assert not make_shapes_dataset(out, **SMALL)['generated']
    assert os.stat(out / 'train' / '000000.png').st_mtime_ns == stamp

    info = make_shapes_dataset(out, **dict(SMALL, num_train=4))
    assert info['generated'] and info['params']['num_train'] == 4
    assert len(os.listdir(out / 'train')) == 4
    # Nothing is left beside the output: the temporary and the replaced directories are gone.
    assert os.listdir(tmp_path) == ['shapes']


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not a shapes dataset'):
        make_shapes_dataset(out, **SMALL)
    assert os.listdir(out) == ['notes.txt']
    assert os.listdir(tmp_path) == ['mine']
