from .reparam import ConvBN, RepConvBN, fuse_conv_bn

__all__ = ['ConvBN', 'RepConvBN', 'fuse_conv_bn']
