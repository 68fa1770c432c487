from .norm import BatchNorm2d, build_norm
from .rep_conv_bn import ConvBN, RepConvBN, fuse_conv_bn

__all__ = ['BatchNorm2d', 'ConvBN', 'RepConvBN', 'build_norm', 'fuse_conv_bn']
