from .distill_schedule_hook import DistillScheduleHook
from .reparam_checkpoint_hook import ReparamCheckpointHook

__all__ = ['DistillScheduleHook', 'ReparamCheckpointHook']
