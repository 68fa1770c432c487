"""A deterministic synthetic detection dataset (coloured shapes on clutter) in COCO format.

It exists so that training, evaluation, distillation and deployment can be checked end to end in
minutes on a CPU, without downloading anything. Every image is drawn from its own random stream
(``seed``, split, index), so the same arguments always give byte-identical files.
"""
import json
import math
import os
import os.path as osp
import shutil
import tempfile
import uuid
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES_CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle')
# Bump when the drawing changes, so that cached datasets are regenerated.
GENERATOR_VERSION = 3
META_FILE = 'shapes_meta.json'
SPLITS = ('train', 'val')

# Sizes are given for 256-px images and scaled with ``image_size``.
_REF_SIZE = 256
_OBJECT_EXTENT = (20, 80)  # bbox side of an object
# Many objects per image: each training step then sees more examples of every class (3-10 objects of
# 20-100 px -> 6-14 of 20-80 px took the demo from 0.48 to 0.63 mAP50 in the same 300 steps).
_OBJECTS_PER_IMAGE = (6, 14)
# Squares and triangles stand roughly upright (a 45-degree square is a diamond, which a from-scratch CPU
# demo cannot learn to tell from a circle in minutes); a few degrees of tilt keep boxes varied.
_MAX_TILT_DEGREES = 15
_BLOB_DIAMETER = (3, 10)  # unannotated clutter, kept below the smallest object
_MAX_OVERLAP = 0.3  # intersection / smaller box: objects may touch but stay recognisable
_MIN_COLOUR_DISTANCE = 150  # L1 distance (0..765) between an object and the background under it
_NOISE_STD = 6.0

Box = Tuple[float, float, float, float]  # x1, y1, x2, y2


def _unit_polygon(shape: str) -> Optional[np.ndarray]:
    """Vertices of an axis-aligned square / apex-up equilateral triangle centred at the origin; None for
    a circle."""
    if shape == 'circle':
        return None
    sides = 4 if shape == 'square' else 3
    first_vertex = -math.pi / 4 if shape == 'square' else -math.pi / 2
    angles = np.arange(sides) * (2 * math.pi / sides) + first_vertex
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear colour gradient in a random direction (float HxWx3)."""
    start, end = rng.uniform(30, 225, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    return start + (end - start) * t[..., None]


def _random_colour(rng: np.random.Generator) -> Tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _draw_clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    """Thin lines and small blobs: structure a detector must learn to ignore."""
    scale = size / _REF_SIZE
    for _ in range(int(rng.integers(2, 7))):
        x1, y1, x2, y2 = (float(v) for v in rng.uniform(0, size, size=4))
        draw.line([x1, y1, x2, y2], fill=_random_colour(rng), width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(2, 9))):
        d = rng.uniform(*_BLOB_DIAMETER) * scale
        rx, ry = d / 2, d / 2 * rng.uniform(0.5, 1.0)
        cx, cy = (float(v) for v in rng.uniform(0, size, size=2))
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_random_colour(rng))


def _object_colour(rng: np.random.Generator, under: np.ndarray) -> Tuple[int, int, int]:
    """A random colour that differs clearly from the background under the object."""
    colour = _random_colour(rng)
    for _ in range(20):
        if np.abs(np.asarray(colour) - under).sum() >= _MIN_COLOUR_DISTANCE:
            break
        colour = _random_colour(rng)
    return colour


def _place_object(rng: np.random.Generator, size: int,
                  placed: Sequence[Box]) -> Optional[Tuple[str, Optional[np.ndarray], Box]]:
    """Pick a class, scale, tilt and position that does not hide an earlier object."""
    scale = size / _REF_SIZE
    for _ in range(30):
        shape = SHAPES_CLASSES[int(rng.integers(len(SHAPES_CLASSES)))]
        extent = rng.uniform(*_OBJECT_EXTENT) * scale
        polygon = _unit_polygon(shape)
        if polygon is not None:
            angle = math.radians(rng.uniform(-_MAX_TILT_DEGREES, _MAX_TILT_DEGREES))
            rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            polygon = polygon @ rot.T
            polygon *= extent / (polygon.max(0) - polygon.min(0)).max()
            polygon -= polygon.min(0)
            w, h = polygon.max(0)
        else:
            w = h = extent
        x1 = rng.uniform(1, size - 1 - w)
        y1 = rng.uniform(1, size - 1 - h)
        box = (float(x1), float(y1), float(x1 + w), float(y1 + h))
        if all(_overlap(box, other) <= _MAX_OVERLAP for other in placed):
            if polygon is not None:
                polygon = polygon + np.array([x1, y1])
            return shape, polygon, box
    return None


def _draw_image(seed: int, split: str, index: int, size: int) -> Tuple[np.ndarray, List[dict]]:
    """Draw one image; returns it (uint8 HxWx3) and its objects (class name, box, area)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    background = _background(rng, size)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    _draw_clutter(rng, draw, size)
    objects: List[dict] = []
    for _ in range(int(rng.integers(_OBJECTS_PER_IMAGE[0], _OBJECTS_PER_IMAGE[1] + 1))):
        placed = _place_object(rng, size, [obj['box'] for obj in objects])
        if placed is None:
            continue
        shape, polygon, box = placed
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        colour = _object_colour(rng, background[cy, cx])
        if polygon is None:
            draw.ellipse(list(box), fill=colour)
            area = math.pi * ((box[2] - box[0]) / 2)**2
        else:
            draw.polygon([tuple(p) for p in polygon.tolist()], fill=colour)
            area = _polygon_area(polygon)
        objects.append(dict(name=shape, box=box, area=area))
    pixels = np.asarray(image, dtype=np.float32)
    # Luminance noise: as realistic as per-channel noise for this purpose, and half the PNG size.
    pixels += rng.normal(0, _NOISE_STD, size=(size, size, 1))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), objects


def _write_split(root: str, split: str, num_images: int, size: int, seed: int) -> int:
    """Write the images and the COCO annotation file of one split; returns the object count."""
    os.makedirs(osp.join(root, split))
    images, annotations = [], []
    for index in range(num_images):
        pixels, objects = _draw_image(seed, split, index, size)
        file_name = f'{index:06d}.png'
        Image.fromarray(pixels).save(osp.join(root, split, file_name), format='PNG', compress_level=1)
        image_id = index + 1
        images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
        for obj in objects:
            x1, y1, x2, y2 = obj['box']
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=SHAPES_CLASSES.index(obj['name']) + 1,
                    bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    area=round(obj['area'], 2),
                    iscrowd=0))
    coco = dict(
        info=dict(description=f'ghostdet synthetic shapes ({split}, seed {seed})'),
        images=images,
        annotations=annotations,
        categories=[
            dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(SHAPES_CLASSES)
        ])
    _write_json(osp.join(root, 'annotations', f'instances_{split}.json'), coco)
    return len(annotations)


def _write_json(path: str, obj: dict) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, sort_keys=True, separators=(',', ':'))


def _read_meta(out_dir: str) -> Optional[dict]:
    try:
        with open(osp.join(out_dir, META_FILE), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(out_dir: str, params: dict) -> bool:
    meta = _read_meta(out_dir)
    return (meta is not None and meta.get('params') == params
            and all(osp.isfile(osp.join(out_dir, 'annotations', f'instances_{s}.json')) for s in SPLITS))


def _replace_dir(tmp_dir: str, out_dir: str, params: dict) -> None:
    """Move the finished ``tmp_dir`` to ``out_dir``; an older shapes dataset there is replaced."""
    if _is_complete(out_dir, params):  # another process (e.g. a second rank) was faster
        shutil.rmtree(tmp_dir)
        return
    old = None
    if osp.exists(out_dir):
        if not osp.isdir(out_dir) or (os.listdir(out_dir) and _read_meta(out_dir) is None):
            raise FileExistsError(f'{out_dir} exists and is not a shapes dataset; '
                                  'choose another output directory or remove it.')
        old = tempfile.mkdtemp(prefix=f'.{osp.basename(out_dir)}.old-', dir=osp.dirname(out_dir))
        os.rename(out_dir, osp.join(old, 'dataset'))
    try:
        os.rename(tmp_dir, out_dir)
    except OSError:
        if not _is_complete(out_dir, params):
            raise
        shutil.rmtree(tmp_dir)
    if old is not None:
        shutil.rmtree(old)


def make_shapes_dataset(out_dir: str,
                        num_train: int = 400,
                        num_val: int = 50,
                        image_size: int = 256,
                        seed: int = 0) -> dict:
    """Write the shapes dataset to ``out_dir`` unless it already holds the same one.

    Layout: ``train/*.png``, ``val/*.png``, ``annotations/instances_{train,val}.json`` and
    ``shapes_meta.json``. The files are written to a temporary directory beside ``out_dir`` and
    renamed into place, so an interrupted run never leaves a partial dataset behind.

    Returns:
        dict: ``data_root``, the generation ``params``, ``classes``, ``num_annotations`` per split
        and ``generated`` (False when an existing dataset was reused).
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train} and {num_val}')
    if image_size < 32:
        raise ValueError(f'image_size must be >= 32, got {image_size}')
    out_dir = osp.abspath(out_dir)
    params = dict(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed,
                  version=GENERATOR_VERSION)
    if _is_complete(out_dir, params):
        return dict(_read_meta(out_dir), data_root=out_dir, generated=False)

    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    # Not mkdtemp: its 0700 mode would stick to the renamed dataset.
    tmp_dir = osp.join(parent, f'.{osp.basename(out_dir)}.tmp-{uuid.uuid4().hex}')
    os.makedirs(tmp_dir)
    try:
        os.makedirs(osp.join(tmp_dir, 'annotations'))
        counts = {split: _write_split(tmp_dir, split, n, image_size, seed)
                  for split, n in zip(SPLITS, (num_train, num_val))}
        meta = dict(params=params, classes=list(SHAPES_CLASSES), num_annotations=counts)
        _write_json(osp.join(tmp_dir, META_FILE), meta)
        _replace_dir(tmp_dir, out_dir, params)
    finally:
        if osp.exists(tmp_dir):
            shutil.rmtree(tmp_dir)
    return dict(meta, data_root=out_dir, generated=True)
