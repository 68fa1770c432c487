# The FCOS twin of the CPU demo: same backbone, data and schedule; FCOS head (GN, 64 channels, 2 convs).
_base_ = './retinanet_ghostnetv3-lite_shapes.py'
model = dict(
    type='FCOS',
    neck=dict(add_extra_convs='on_output', relu_before_extra_convs=True),
    bbox_head=dict(
        _delete_=True, type='FCOSHead', num_classes=3, in_channels=64, feat_channels=64,
        stacked_convs=2, strides=[8, 16, 32, 64, 128]))
