from .lite_heads import LiteFCOSHead, LiteRetinaHead

__all__ = ['LiteFCOSHead', 'LiteRetinaHead']
