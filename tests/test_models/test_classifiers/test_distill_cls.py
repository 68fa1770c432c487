"""The GhostNetV3 classification recipe: the reference head, official weights converted into it, and
the ImageNet KD config running a few iterations on a generated image-folder dataset."""
import os.path as osp
import uuid

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from PIL import Image

import ghostdet  # noqa: F401
import ghostdet.models.classifiers  # noqa: F401  (registers the head, losses and distiller)
from ghostdet.models.classifiers import SoftTargetCELoss, convert_classifier_weights
from ghostdet.models.distill.teacher import build_teacher
from ghostdet.deploy import DEPLOY_CONFIG_NAME, build_cpu_model, load_weights
from ghostdet.testing import REPO
from mmpretrain.registry import MODELS

pytestmark = pytest.mark.usefixtures('single_thread')
timm = pytest.importorskip('timm')

CLASSES = ('red', 'green', 'blue')
SIZE = 64  # GhostNetV3's DFC attention pools 2x2 at stride 32
KD_CONFIG = osp.join(REPO, 'configs', 'imagenet', 'ghostnetv3-1.0x_kd-beitv2-b_8xb128-300e_in1k.py')


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build mmpretrain types by name, also after a detection Runner (scope mmdet) in this process."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def classifier_cfg(widen_factor: float = 1.0, num_classes: int = 1000) -> dict:
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'imagenet', 'ghostnetv3-1.0x_8xb128-300e_in1k.py')).model
    cfg.backbone.widen_factor = widen_factor
    cfg.head.update(num_classes=num_classes, in_channels=int(960 * widen_factor))
    return cfg


def test_classifier_matches_the_reference_parameter_count():
    """8,129,028 parameters for the 1.0x classifier in training form (reference, spec section 9)."""
    model = MODELS.build(classifier_cfg())
    assert sum(p.numel() for p in model.parameters()) == 8_129_028


def test_official_weights_convert_into_the_classifier():
    """timm's ghostnetv3_050 (the authors' layout, bn1 names) -> the same logits in our classifier."""
    reference = timm.create_model('ghostnetv3_050', num_classes=len(CLASSES)).eval()
    model = MODELS.build(classifier_cfg(0.5, len(CLASSES))).eval()
    state = convert_classifier_weights(dict(state_dict_ema=reference.state_dict()))
    load_weights(model, state)  # strict
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.head(model.extract_feat(x)), reference(x), atol=1e-4)
    with pytest.raises(ValueError, match='not a GhostNetV3 classification checkpoint'):
        convert_classifier_weights({k: v for k, v in reference.state_dict().items()
                                    if not k.startswith(('conv_head', 'classifier'))})


def test_soft_target_ce():
    logits = torch.randn(4, 5)
    loss = SoftTargetCELoss(temperature=2.0)
    entropy = -(logits.div(2).softmax(1) * logits.div(2).log_softmax(1)).sum(1).mean() * 4
    assert loss(logits, logits).item() == pytest.approx(entropy.item(), rel=1e-5)  # minimum: KL = 0
    assert loss(torch.randn(4, 5), logits) > loss(logits, logits)
    with pytest.raises(ValueError, match='same classes'):
        loss(torch.randn(4, 3), logits)


@pytest.fixture
def image_folder(tmp_path) -> str:
    """Three classes of noisy single-colour 72 px images, four each, one folder per class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        folder = tmp_path / 'images' / name
        folder.mkdir(parents=True)
        for i in range(4):
            image = rng.integers(0, 60, (72, 72, 3), dtype=np.uint8)
            image[..., c] += 180
            Image.fromarray(image).save(folder / f'{i}.png')
    return str(tmp_path / 'images')


def _tiny_teacher(tmp_path) -> dict:
    """A ResNet-18 classifier with another normalisation (no RGB swap, mean/std 127.5)."""
    model = dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, to_rgb=False),
        backbone=dict(type='ResNet', depth=18, base_channels=16, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=len(CLASSES), in_channels=128))
    path = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=MODELS.build(model).state_dict()), path)
    return dict(model=model, checkpoint=path)


def _data(root: str, pipeline: list, train: bool) -> dict:
    return dict(batch_size=4, num_workers=0, persistent_workers=False,
                sampler=dict(type='DefaultSampler', shuffle=train),
                dataset=dict(type='CustomDataset', data_root=root, classes=CLASSES, pipeline=pipeline))


@pytest.mark.slow
def test_kd_config_trains_on_an_image_folder(image_folder, tmp_path):
    """The shipped KD config, shrunk: GhostNetV3-0.5x student, ResNet-18 teacher, 64 px, one epoch."""
    teacher = _tiny_teacher(tmp_path)
    cfg = Config.fromfile(KD_CONFIG)
    cfg.model.student.backbone.widen_factor = 0.5
    cfg.model.student.head.update(num_classes=len(CLASSES), in_channels=480)
    cfg.model.update(teacher_config=dict(model=teacher['model']), teacher_checkpoint=teacher['checkpoint'])
    cfg.data_preprocessor.num_classes = len(CLASSES)
    train_pipeline = [dict(t, scale=SIZE) if t['type'] == 'RandomResizedCrop' else t
                      for t in cfg.train_pipeline]
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='CenterCrop', crop_size=SIZE),
                     dict(type='PackInputs')]
    cfg.train_dataloader = _data(image_folder, train_pipeline, train=True)
    cfg.val_dataloader = cfg.test_dataloader = _data(image_folder, test_pipeline, train=False)
    cfg.val_evaluator = cfg.test_evaluator = dict(type='Accuracy', topk=(1, ))
    cfg.train_cfg.update(max_epochs=1)
    cfg.default_hooks.logger.interval = 1
    cfg.update(work_dir=str(tmp_path / 'work'), randomness=dict(seed=0), experiment_name=uuid.uuid4().hex)
    runner = Runner.from_cfg(cfg)
    runner.train()

    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        log = f.read()
    assert 'loss_kd:' in log and 'accuracy/top1' in log
    assert runner.model._teacher.normalization != runner.model._teacher.student_normalization
    checkpoint = _load_checkpoint(osp.join(runner.work_dir, 'epoch_1.pth'))
    assert all(k.startswith('student.') for k in checkpoint['state_dict'])
    reference = build_teacher(dict(model=teacher['model']), teacher['checkpoint'], MODELS).state_dict()
    for key, value in runner.model.teacher.state_dict().items():
        assert torch.equal(value, reference[key]), key
    deploy_cfg = Config.fromfile(osp.join(runner.work_dir, DEPLOY_CONFIG_NAME))
    assert deploy_cfg.model.type == 'ImageClassifier'
    deploy = _load_checkpoint(osp.join(runner.work_dir, 'epoch_1_deploy.pth'))
    load_weights(build_cpu_model(deploy_cfg.model), deploy['state_dict'])
