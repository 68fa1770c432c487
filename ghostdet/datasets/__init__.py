"""Datasets: the synthetic shapes generator and a COCO dataset with clear input checks."""
from .coco_checks import CheckedCocoDataset
from .shapes import SHAPES_CLASSES, make_shapes_dataset

__all__ = ['CheckedCocoDataset', 'SHAPES_CLASSES', 'make_shapes_dataset']
