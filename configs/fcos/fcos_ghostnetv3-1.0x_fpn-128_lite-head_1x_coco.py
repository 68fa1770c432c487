# Light FCOS-GhostNetV3-1.0x for compact deployment: 128-channel FPN and a head of two shared
# depthwise-separable convs (GN, as the stock head) with 1x1 predictors (stock assigner, losses, NMS).
_base_ = './fcos_ghostnetv3-1.0x_fpn_gn-head_1x_coco.py'
model = dict(
    neck=dict(out_channels=128),
    bbox_head=dict(type='LiteFCOSHead', in_channels=128, feat_channels=128, stacked_convs=2))
