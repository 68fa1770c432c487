"""``CheckedCocoDataset``: ``CocoDataset`` that explains bad input instead of failing later.

Upstream ``CocoDataset`` fails deep inside pycocotools or a dataloader worker on a wrong path or a
malformed file, silently drops annotations of unknown categories, and crashes on boxes that are not
four numbers. Here every such problem is reported when the dataset is built, naming the file and
the config key to change.
"""
import json
import logging
import math
import os.path as osp
from numbers import Real
from typing import Dict, List, Optional, Sequence

from mmengine.logging import print_log

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS

REQUIRED_KEYS = ('images', 'annotations', 'categories')
IMAGE_KEYS = ('id', 'file_name', 'width', 'height')
SHOW_FIRST = 5  # how many offending items an error or a warning quotes


def _first(items: Sequence, n: int = SHOW_FIRST) -> str:
    more = f' ... ({len(items)} in total)' if len(items) > n else ''
    return ', '.join(str(item) for item in items[:n]) + more


def _box_problem(bbox: object, image: Optional[dict]) -> Optional[str]:
    """Why a COCO ``[x, y, w, h]`` box cannot be trained on, or None if it is usable."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(
            isinstance(v, Real) and not isinstance(v, bool) for v in bbox):
        return 'not 4 numbers'
    x, y, w, h = bbox
    if not all(math.isfinite(v) for v in bbox):
        return 'not finite'
    if w <= 0 or h <= 0:
        return 'width or height <= 0'
    if image is None:
        return 'image_id not in images'
    if x >= image['width'] or y >= image['height'] or x + w <= 0 or y + h <= 0:
        return 'outside the image'
    return None


class CheckedCOCO(COCO):
    """COCO API that validates the annotation file before indexing it.

    Structural problems (not JSON, missing sections, unknown category ids) raise ``ValueError``;
    unusable boxes are dropped with one warning that counts them.
    """

    def __init__(self, annotation_file: str) -> None:
        self.annotation_file = annotation_file
        try:
            super().__init__(annotation_file)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f'Annotation file {annotation_file} is not valid JSON: {e}. '
                             'Check `ann_file`.') from e
        except AssertionError as e:  # pycocotools asserts that the top level is a dict
            raise ValueError(f'Annotation file {annotation_file} is not a COCO file: {e}.') from e

    def createIndex(self) -> None:  # noqa: N802 (pycocotools' name)
        self._check_structure()
        self._check_categories()
        self._drop_broken_boxes()
        super().createIndex()

    def _check_structure(self) -> None:
        missing = [key for key in REQUIRED_KEYS if not isinstance(self.dataset.get(key), list)]
        if missing:
            raise ValueError(f'Annotation file {self.annotation_file} has no list {missing}; a COCO '
                             f'detection file needs {list(REQUIRED_KEYS)}.')
        bad = [i for i, img in enumerate(self.dataset['images'])
               if not isinstance(img, dict) or any(k not in img for k in IMAGE_KEYS)]
        if bad:
            raise ValueError(f'Annotation file {self.annotation_file}: images[{_first(bad)}] lack '
                             f'one of the keys {list(IMAGE_KEYS)}.')

    def _check_categories(self) -> None:
        known = {cat.get('id') for cat in self.dataset['categories']}
        unknown = sorted({ann.get('category_id') for ann in self.dataset['annotations']} - known, key=str)
        if unknown:
            names = [(cat.get('id'), cat.get('name')) for cat in self.dataset['categories']]
            raise ValueError(f'Annotation file {self.annotation_file}: annotations use category_id '
                             f'{_first(unknown)} not declared in categories {names}.')

    def get_cat_ids(self, cat_names: Sequence[str] = (), *args, **kwargs) -> List[int]:
        """Category ids of ``cat_names``; all must exist, else labels would shift or vanish silently."""
        names = [cat.get('name') for cat in self.cats.values()]
        missing = [name for name in cat_names if name not in names]
        if missing:
            raise ValueError(f'Annotation file {self.annotation_file} has categories {names}; the '
                             f'classes of the dataset are not in the file: {missing}. Set '
                             '`metainfo=dict(classes=...)` to names from the file.')
        return super().get_cat_ids(list(cat_names), *args, **kwargs)

    def _drop_broken_boxes(self) -> None:
        images: Dict[object, dict] = {img['id']: img for img in self.dataset['images']}
        kept, broken = [], []
        for ann in self.dataset['annotations']:
            problem = _box_problem(ann.get('bbox'), images.get(ann.get('image_id')))
            if problem is None:
                kept.append(ann)
            else:
                broken.append(f"id {ann.get('id')} bbox {ann.get('bbox')} ({problem})")
        if broken:
            self.dataset['annotations'] = kept
            print_log(
                f'{self.annotation_file}: skipped {len(broken)} of {len(broken) + len(kept)} '
                f'annotations with an unusable bbox: {_first(broken)}',
                logger='current',
                level=logging.WARNING)


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """``CocoDataset`` that checks paths, the annotation file and the image files when built.

    Use it as ``dataset_type = 'CheckedCocoDataset'``; everything else is ``CocoDataset``.
    """

    COCOAPI = CheckedCOCO

    def load_data_list(self) -> List[dict]:
        # Paths and image files are checked on local storage only (backend_args=None): on remote
        # storage MMEngine's file backends report their own errors, and a stat per image is slow.
        local = self.backend_args is None
        if local:
            self._check_paths()
        data_list = super().load_data_list()
        if local:
            self._check_images(data_list)
        return data_list

    def _check_paths(self) -> None:
        if self.data_root and not osp.isdir(self.data_root):
            raise FileNotFoundError(f'Dataset root {self.data_root} does not exist; set `data_root`.')
        if not self.ann_file:
            raise FileNotFoundError('No annotation file given; set `ann_file`.')
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'Annotation file {self.ann_file} does not exist; set `ann_file` '
                                    '(relative to `data_root`).')
        img_dir = self.data_prefix.get('img', '')
        if img_dir and not osp.isdir(img_dir):
            raise FileNotFoundError(f'Image folder {img_dir} does not exist; set '
                                    '`data_prefix=dict(img=...)` (relative to `data_root`).')

    def _check_images(self, data_list: List[dict]) -> None:
        missing = [info['img_path'] for info in data_list if not osp.isfile(info['img_path'])]
        if missing:
            raise FileNotFoundError(f'{len(missing)} of {len(data_list)} images listed in '
                                    f'{self.ann_file} do not exist: {_first(missing)}; check '
                                    '`data_prefix` and `data_root`.')
