# Light RetinaNet-GhostNetV3-1.0x for compact deployment: 128-channel FPN and a head of two shared
# depthwise-separable convs with BN and 1x1 predictors (stock assigner, losses and NMS).
_base_ = './retinanet_ghostnetv3-1.0x_fpn_1x_coco.py'
model = dict(
    neck=dict(out_channels=128),
    bbox_head=dict(type='LiteRetinaHead', in_channels=128, feat_channels=128, stacked_convs=2,
                   norm_cfg=dict(type='BN', requires_grad=True)))
