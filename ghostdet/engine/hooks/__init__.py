from .reparam_checkpoint_hook import ReparamCheckpointHook

__all__ = ['ReparamCheckpointHook']
