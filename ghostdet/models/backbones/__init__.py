from .ghostnetv3 import GhostNetV3

__all__ = ['GhostNetV3']
