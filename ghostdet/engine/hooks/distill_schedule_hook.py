"""Warm-up, decay and stop of the distillation losses, set in the config."""
import math
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...models.distill import DistillerBase


@HOOKS.register_module()
class DistillScheduleHook(Hook):
    """Scale every distillation loss of a ghostdet distiller by a factor set before each iteration.

    The factor warms up linearly over ``warmup`` (from ``1/warmup`` to 1: a fresh student's features
    are far from the teacher's, and adapters start random), then stays 1 or decays (``'linear'`` or
    ``'cosine'``) to ``min_factor`` at the last iteration before ``stop`` (or of training), and is 0
    from ``stop`` on, when the teacher is not run at all: the last steps refine the student on its own
    losses
    (mmyolo's ``StopDistillHook(stop_epoch=280)`` is ``DistillScheduleHook(stop=280, by_epoch=True)``).

    The factor depends on the iteration only, so a resumed run continues it. It is logged as
    ``distill_factor``. Learnable adapters stay in the graph after ``stop`` (a zero loss term), so DDP runs
    on with MMEngine's default ``find_unused_parameters=False``.

    Args:
        warmup: warm-up length; 0 for none.
        decay: ``None``, ``'linear'`` or ``'cosine'``.
        min_factor: factor at the end of the decay.
        stop: iteration (epoch with ``by_epoch``) from which distillation is off; ``None``: never.
        by_epoch: ``warmup`` and ``stop`` count epochs instead of iterations.
    """

    priority = 'NORMAL'
    DECAYS = (None, 'linear', 'cosine')

    def __init__(self, warmup: int = 0, decay: Optional[str] = None, min_factor: float = 0.,
                 stop: Optional[int] = None, by_epoch: bool = False) -> None:
        if decay not in self.DECAYS:
            raise ValueError(f'DistillScheduleHook decay must be one of {self.DECAYS}, got {decay!r}')
        if warmup < 0 or not 0 <= min_factor <= 1:
            raise ValueError(f'DistillScheduleHook needs warmup >= 0 and 0 <= min_factor <= 1, got '
                             f'warmup={warmup}, min_factor={min_factor}')
        if stop is not None and stop <= warmup:
            raise ValueError(f'DistillScheduleHook stop ({stop}) must come after the warm-up ({warmup})')
        self.warmup = warmup
        self.decay = decay
        self.min_factor = min_factor
        self.stop = stop
        self.by_epoch = by_epoch

    def factor(self, iteration: int, max_iters: int, iters_per_epoch: int = 1) -> float:
        """The factor at ``iteration`` (0-based) of ``max_iters``."""
        unit = iters_per_epoch if self.by_epoch else 1
        warmup = self.warmup * unit
        end = max_iters if self.stop is None else self.stop * unit
        if iteration >= end and self.stop is not None:
            return 0.
        factor = min(1., (iteration + 1) / warmup) if warmup else 1.
        if self.decay is not None and iteration >= warmup:
            progress = min(1., (iteration - warmup) / max(1, end - 1 - warmup))  # last iteration: 1
            shape = 1 - progress if self.decay == 'linear' else (1 + math.cos(math.pi * progress)) / 2
            factor *= self.min_factor + (1 - self.min_factor) * shape
        return factor

    @staticmethod
    def _distiller(runner) -> DistillerBase:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(model, DistillerBase):
            raise TypeError('DistillScheduleHook needs a distiller as the model (e.g. SingleStageDistiller), '
                            f'got {type(model).__name__}')
        return model

    def before_run(self, runner) -> None:
        self._distiller(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        factor = self.factor(runner.iter, runner.max_iters, len(runner.train_dataloader))
        self._distiller(runner).distill_factor = factor
        runner.message_hub.update_scalar('train/distill_factor', factor)
