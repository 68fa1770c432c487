from .lite_heads import LiteFCOSHead, LiteRetinaHead
from .ssd_head import PredictableSSDHead, with_predictable_ssd_head

__all__ = ['LiteFCOSHead', 'LiteRetinaHead', 'PredictableSSDHead', 'with_predictable_ssd_head']
