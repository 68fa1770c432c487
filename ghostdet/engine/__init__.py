"""Training-time services registered in MMEngine's HOOKS registry."""
from .hooks import ReparamCheckpointHook

__all__ = ['ReparamCheckpointHook']
