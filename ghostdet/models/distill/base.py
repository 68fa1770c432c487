"""What every ghostdet distiller shares: an ordinary student, a frozen teacher, weighted KD losses.

The student is the model users deploy: it sits under ``student`` (the deploy config is
``model.student``, the deploy weights ``student.*``), its data preprocessor is the distiller's, and
``predict``/``tensor`` modes go straight to it, so validation and testing are those of the student.
In ``loss`` mode the student computes its own losses as usual; a forward hook on one of its modules
(the dense head, the classification head) records what the KD losses need, so nothing runs twice.
"""
import copy
from abc import abstractmethod
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import Registry
from torch import Tensor

from .teacher import FrozenTeacher, TeacherConfig, build_teacher

Outputs = Dict[str, Any]
Call = Tuple[tuple, Any]  # positional inputs and output of one forward call


@contextmanager
def recording(module: nn.Module) -> Iterator[List[Call]]:
    """Record the inputs and output of every forward call of ``module`` inside the block."""
    calls: List[Call] = []
    handle = module.register_forward_hook(lambda _, args, output: calls.append((args, output)))
    try:
        yield calls
    finally:
        handle.remove()


class DistillerBase(BaseModel):
    """Student + frozen teacher + ``distill_losses`` (name -> loss config, ``None`` switches one off).

    Subclasses set ``registry`` (where student, teacher and losses are built), ``sources`` (what the
    losses may compare) and say how to get those from the student's recorded call and the teacher.
    Each KD loss has a ``source`` attribute and is called as ``loss(student[source], teacher[source])``;
    its value, times ``distill_factor`` (set by ``DistillScheduleHook``), is logged under its name.
    """

    registry: Registry
    sources: Tuple[str, ...]

    def __init__(self,
                 student: dict,
                 teacher_config: TeacherConfig,
                 teacher_checkpoint: str,
                 distill_losses: Dict[str, Optional[dict]],
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.student = self.registry.build(self._with_preprocessor(student, data_preprocessor))
        self.data_preprocessor = self.student.data_preprocessor
        self._teacher = FrozenTeacher(build_teacher(teacher_config, teacher_checkpoint, self.registry),
                                      self.student.data_preprocessor)
        self.distill_factor = 1.0
        with torch.random.fork_rng(devices=[]):  # adapters: keep the run's random stream as without KD
            self.distill_losses = self._build_losses(distill_losses)

    @staticmethod
    def _with_preprocessor(student: dict, data_preprocessor: Optional[dict]) -> dict:
        """A ``data_preprocessor`` given to the distiller (mmpretrain configs have it at top level, the
        Runner passes it on) is the student's, as in ``ghostdet.deploy.deploy_source_config``."""
        own = student.get('data_preprocessor')
        if data_preprocessor is None or own == data_preprocessor:
            return student
        if own is not None:
            raise ValueError('The distiller got a data_preprocessor (a top-level data_preprocessor in the '
                             'config, say) that differs from model.student.data_preprocessor; give one')
        return dict(copy.deepcopy(student), data_preprocessor=data_preprocessor)

    def _build_losses(self, configs: Dict[str, Optional[dict]]) -> nn.ModuleDict:
        losses = nn.ModuleDict()
        loss_args = self._loss_args()
        for name, cfg in configs.items():
            if cfg is None:
                continue
            if not name.startswith('loss_'):
                raise ValueError(f'distill_losses key {name!r} must start with "loss_" (MMEngine sums and '
                                 'logs the outputs named loss_*)')
            loss = self.registry.build(cfg, default_args=loss_args)
            source = getattr(loss, 'source', None)
            if source not in self.sources:
                raise ValueError(f'distill_losses.{name} ({type(loss).__name__}) compares {source!r}; '
                                 f'{type(self).__name__} provides {self.sources}')
            losses[name] = loss
        return losses

    def _loss_args(self) -> dict:
        """Check that student and teacher suit this distiller; the build arguments every KD loss gets."""
        return {}

    @property
    def teacher(self) -> nn.Module:
        return self._teacher.model

    @property
    def distilling(self) -> bool:
        return len(self.distill_losses) > 0 and self.distill_factor > 0

    def train(self, mode: bool = True) -> 'DistillerBase':
        """The student follows ``mode``; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, inputs: Tensor, data_samples: Optional[Sequence] = None, mode: str = 'tensor') -> Any:
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.student(inputs, data_samples, mode)

    def predict(self, inputs: Tensor, data_samples: Sequence, **kwargs) -> Any:
        return self.student.predict(inputs, data_samples, **kwargs)

    def loss(self, inputs: Tensor, data_samples: Sequence) -> Dict[str, Union[Tensor, List[Tensor]]]:
        """The student's own losses plus every KD loss (none once the factor is 0: no teacher run)."""
        if not self.distilling:
            return self._with_idle_adapters(self.student.loss(inputs, data_samples))
        tapped = self.student_tap()
        with recording(tapped) as calls:
            losses = self.student.loss(inputs, data_samples)
        if not calls:
            raise RuntimeError(f"The student's loss() did not call {type(tapped).__name__}, whose inputs and "
                               'outputs the distillation losses compare')
        needed = {loss.source for loss in self.distill_losses.values()}
        student_outputs = self.student_outputs(*calls[0])
        with torch.no_grad():
            teacher_outputs = self.teacher_outputs(self._teacher.inputs(inputs, data_samples), needed)
        for name, loss in self.distill_losses.items():
            if name in losses:
                raise ValueError(f'distill_losses.{name} has the name of a loss of the student')
            losses[name] = self.distill_factor * loss(student_outputs[loss.source],
                                                      teacher_outputs[loss.source])
        return losses

    def _with_idle_adapters(self, losses: Dict[str, Any]) -> Dict[str, Any]:
        """Keep the KD losses' learnable parameters (adapters) in the graph once distillation is off, with a
        zero term: DDP with ``find_unused_parameters=False`` (MMEngine's default) fails on parameters that
        get no gradient."""
        idle = [p for p in self.distill_losses.parameters() if p.requires_grad]
        if idle:
            losses['loss_distill_off'] = sum(p.sum() for p in idle) * 0.
        return losses

    @abstractmethod
    def student_tap(self) -> nn.Module:
        """The student module whose forward call is recorded during the student's loss()."""

    @abstractmethod
    def student_outputs(self, args: tuple, output: Any) -> Outputs:
        """Source name -> student tensors, from the recorded call."""

    @abstractmethod
    def teacher_outputs(self, inputs: Tensor, needed: set) -> Outputs:
        """Source name -> teacher tensors for the ``needed`` sources (called without grad)."""
