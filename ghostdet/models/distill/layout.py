"""What a single-stage detector's dense head consumes and predicts per FPN level.

Read from the built model (not from its config), so that any mmdet single-stage detector with a
prior generator (anchors or points) is described the same way: RetinaNet, FCOS, ATSS, GFL, ...
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch.nn as nn


class LayoutMismatchError(ValueError):
    """Teacher and student heads that a distillation loss cannot compare."""


@dataclass(frozen=True)
class DenseHeadLayout:
    name: str  # e.g. 'RetinaNet (RetinaHead)', for messages
    strides: Tuple[int, ...]  # per FPN level fed to the head
    channels: int  # of every FPN level (the head's in_channels)
    priors: Tuple[int, ...]  # anchors / points per location, per level
    cls_channels: Optional[int]  # classification outputs per prior
    sigmoid: bool  # sigmoid (focal-style) or softmax classification

    @classmethod
    def of(cls, detector: nn.Module) -> 'DenseHeadLayout':
        head = getattr(detector, 'bbox_head', None)
        generator = getattr(head, 'prior_generator', None)
        channels = getattr(head, 'in_channels', None)
        if generator is None or not isinstance(channels, int):
            raise LayoutMismatchError(
                f'{type(detector).__name__}: distillation needs a single-stage detector whose bbox_head '
                'has a prior generator (anchors or points) and one in_channels for all FPN levels')
        strides = []
        for stride in generator.strides:
            width, height = (stride, stride) if isinstance(stride, (int, float)) else stride[:2]
            if width != height:
                raise LayoutMismatchError(f'{type(detector).__name__}: non-square stride {stride}')
            strides.append(int(width))
        return cls(f'{type(detector).__name__} ({type(head).__name__})', tuple(strides), channels,
                   tuple(generator.num_base_priors), getattr(head, 'cls_out_channels', None),
                   bool(getattr(head, 'use_sigmoid_cls', True)))

    def describe(self) -> str:
        """'RetinaNet (RetinaHead): level 0 stride 8 256 ch, level 1 stride 16 256 ch, ...'"""
        levels = ', '.join(f'level {i} stride {s} {self.channels} ch' for i, s in enumerate(self.strides))
        return f'{self.name}: {levels}'

    def describe_head(self) -> str:
        """'RetinaNet (RetinaHead): 9 priors x 80 sigmoid classes per location at strides (8, ...)'"""
        priors = self.priors[0] if len(set(self.priors)) == 1 else self.priors
        kind = 'sigmoid' if self.sigmoid else 'softmax'
        return f'{self.name}: {priors} priors x {self.cls_channels} {kind} classes per location ' \
               f'at strides {self.strides}'


def match_levels(student: DenseHeadLayout, teacher: DenseHeadLayout,
                 strides: Optional[Sequence[int]] = None) -> Tuple[Tuple[int, int], ...]:
    """(student level, teacher level) pairs of equal stride, for ``strides`` (default: all student
    levels); a stride one side lacks is an error that names both sides' levels and channels."""
    wanted = tuple(strides) if strides is not None else student.strides
    for side, layout in (('student', student), ('teacher', teacher)):
        missing = [s for s in wanted if s not in layout.strides]
        if missing:
            common = tuple(s for s in student.strides if s in teacher.strides)
            raise LayoutMismatchError(
                f'FPN levels do not match: the {side} has no level with stride '
                f'{", ".join(map(str, missing))}.\n'
                f'  student {student.describe()}\n  teacher {teacher.describe()}\n'
                f'Distil the common levels only, e.g. strides={common}.')
    return tuple((student.strides.index(s), teacher.strides.index(s)) for s in wanted)
