"""SingleStageDistiller, its losses and DistillScheduleHook: tiny real trainings of RetinaNet and FCOS
students with a teacher of another type and width, frozen teacher out of every checkpoint, resume,
deploy files, the shipped configs, and bad input failing when the model is built."""
import copy
import os.path as osp
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from mmengine.structures import InstanceData

import ghostdet  # noqa: F401  (registers the distiller, losses and hooks)
from ghostdet.engine.hooks import DistillScheduleHook
from ghostdet.models import GhostNetV3
from ghostdet.models.distill import (DenseHeadLayout, DenseLogitKDLoss, LayoutMismatchError, Normalization,
                                     PKDFeatureLoss, TeacherError, build_teacher, renormalize)
from ghostdet.deploy import DEPLOY_CONFIG_NAME, WeightsMismatchError, build_cpu_model, load_weights
from ghostdet.testing import REPO, detector_config, local_teacher, logged_losses, teacher_model_cfg, train
from ghostdet.utils.logs import read_scalars
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

pytestmark = pytest.mark.usefixtures('single_thread')
PKD = dict(loss_pkd=dict(type='PKDFeatureLoss', loss_weight=6.0))


def save_teacher(model_cfg: dict, path: str) -> str:
    """The checkpoint of a randomly initialised teacher, as a runner would write it."""
    torch.save(dict(meta=dict(), state_dict=build_cpu_model(model_cfg).state_dict()), path)
    return path


@pytest.fixture(scope='module')
def teachers(tmp_path_factory) -> Dict[str, dict]:
    """kind -> dict(model=config, checkpoint=path)."""
    root = tmp_path_factory.mktemp('teachers')
    return {kind: dict(model=cfg, checkpoint=save_teacher(cfg, str(root / f'{kind}.pth')))
            for kind, cfg in ((k, teacher_model_cfg(k)) for k in ('retinanet', 'fcos'))}


def distiller_cfg(student_model: dict, teacher: dict, losses: dict = PKD) -> dict:
    return dict(type='SingleStageDistiller', student=student_model,
                teacher_config=dict(model=teacher['model']), teacher_checkpoint=teacher['checkpoint'],
                distill_losses=losses)


def kd_run_cfg(student: str, teacher: dict, data_root: str, work_dir: str, max_epochs: int = 2) -> Config:
    """The student's test config (ghostdet.testing) wrapped in a distiller, with a 3-iteration warm-up."""
    cfg = detector_config(student, data_root, work_dir, max_epochs=max_epochs)
    cfg.model = distiller_cfg(cfg.model, teacher)
    cfg.custom_hooks.append(dict(type='DistillScheduleHook', warmup=3))
    return cfg


def scalar_rows(runner: Runner) -> List[dict]:
    return read_scalars(runner.log_dir)


def assert_teacher_unchanged(runner: Runner, teacher: dict) -> None:
    """Frozen, in eval mode, and the same weights as a teacher freshly built from its checkpoint."""
    live = runner.model.teacher
    reference = build_teacher(dict(model=teacher['model']), teacher['checkpoint'], MODELS)
    assert not live.training and not any(p.requires_grad for p in live.parameters())
    expected = reference.state_dict()
    for key, value in live.state_dict().items():
        assert torch.equal(value.cpu(), expected[key]), key


def assert_checkpoint_without_teacher(runner: Runner, path: str) -> None:
    checkpoint = _load_checkpoint(path)
    keys = list(checkpoint['state_dict'])
    assert keys and all(k.startswith(('student.', 'distill_losses.')) for k in keys)
    student_keys = {f'student.{k}' for k in runner.model.student.state_dict()}
    assert student_keys <= set(keys)
    optimized = {id(p) for group in runner.optim_wrapper.optimizer.param_groups for p in group['params']}
    assert optimized == {id(p) for p in runner.model.parameters()}
    assert not optimized & {id(p) for p in runner.model.teacher.parameters()}


@pytest.fixture(scope='module')
def retinanet_kd(data_root, teachers, tmp_path_factory) -> Runner:
    """RetinaNet-GhostNetV3-0.5x (32 ch) <- FCOS-GhostNetV3-1.0x (64 ch): 2 epochs of 2 iterations."""
    return train(kd_run_cfg('retinanet', teachers['fcos'], data_root, str(tmp_path_factory.mktemp('kd'))))


@pytest.mark.slow
def test_retinanet_student_fcos_teacher(retinanet_kd, teachers):
    rows = [row for row in scalar_rows(retinanet_kd) if 'loss' in row]
    assert [row['iter'] for row in rows] == [1, 2, 3, 4]
    for row in rows:  # every loss logged on its own, the KD loss included in the total
        assert {'loss_cls', 'loss_bbox', 'loss_pkd'} <= set(row)
        assert row['loss'] == pytest.approx(row['loss_cls'] + row['loss_bbox'] + row['loss_pkd'], rel=1e-4)
    assert [row['distill_factor'] for row in rows] == pytest.approx([1 / 3, 2 / 3, 1, 1])
    assert len(retinanet_kd.model.distill_losses.loss_pkd.adapters) == 5  # 32 -> 64 channels
    assert_teacher_unchanged(retinanet_kd, teachers['fcos'])
    assert_checkpoint_without_teacher(retinanet_kd, osp.join(retinanet_kd.work_dir, 'epoch_2.pth'))


@pytest.mark.slow
def test_deploy_checkpoint_is_the_student_alone(retinanet_kd):
    deploy_cfg = Config.fromfile(osp.join(retinanet_kd.work_dir, DEPLOY_CONFIG_NAME))
    assert deploy_cfg.model.type == 'RetinaNet' and 'teacher_config' not in deploy_cfg.model
    assert deploy_cfg.custom_hooks == []  # neither the reparam nor the KD schedule hook
    checkpoint = _load_checkpoint(osp.join(retinanet_kd.work_dir, 'epoch_2_deploy.pth'))
    assert not any(k.startswith(('student.', 'distill_losses.')) for k in checkpoint['state_dict'])
    load_weights(build_cpu_model(deploy_cfg.model), checkpoint['state_dict'])  # strict


@pytest.mark.slow
def test_resume_continues_the_same_run(retinanet_kd, teachers, data_root, tmp_path):
    cfg = kd_run_cfg('retinanet', teachers['fcos'], data_root, str(tmp_path))
    cfg.update(resume=True, load_from=osp.join(retinanet_kd.work_dir, 'epoch_1.pth'))
    resumed = train(cfg)
    uninterrupted = logged_losses(retinanet_kd)
    assert logged_losses(resumed) == {it: uninterrupted[it] for it in (3, 4)}
    assert [row['distill_factor'] for row in scalar_rows(resumed) if 'loss' in row] == [1, 1]
    assert_teacher_unchanged(resumed, teachers['fcos'])


@pytest.mark.slow
def test_fcos_student_retinanet_teacher(data_root, teachers, tmp_path):
    runner = train(kd_run_cfg('fcos', teachers['retinanet'], data_root, str(tmp_path), max_epochs=1))
    rows = [row for row in scalar_rows(runner) if 'loss' in row]
    assert len(rows) == 2
    assert all({'loss_cls', 'loss_bbox', 'loss_centerness', 'loss_pkd'} <= set(row) for row in rows)
    assert all(0 < row['loss_pkd'] < float('inf') for row in rows)
    assert_teacher_unchanged(runner, teachers['retinanet'])
    assert_checkpoint_without_teacher(runner, osp.join(runner.work_dir, 'epoch_1.pth'))


def _batch(size: int = 128, num: int = 2) -> tuple:
    samples = []
    for _ in range(num):
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             batch_input_shape=(size, size), scale_factor=(1., 1.),
                                             ori_shape=(size, size)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 12., 60., 70.]]),
                                           labels=torch.tensor([1]))
        samples.append(sample)
    return torch.randn(num, 3, size, size), samples


def test_logit_kd_with_a_teacher_of_the_same_head_layout(tmp_path):
    """RetinaNet <- wider RetinaNet: both KD losses, gradients reach the student only."""
    student_cfg = detector_config('retinanet', '', '').model
    teacher = dict(model=teacher_model_cfg('retinanet'))
    teacher['checkpoint'] = save_teacher(teacher['model'], str(tmp_path / 'teacher.pth'))
    losses = dict(PKD, loss_logit_kd=dict(type='DenseLogitKDLoss', temperature=2.0))
    model = MODELS.build(distiller_cfg(student_cfg, teacher, losses))
    model.train()
    values = model.loss(*_batch())
    assert values['loss_logit_kd'] > 0 and values['loss_pkd'] > 0
    values['loss_logit_kd'].backward()
    assert model.student.bbox_head.retina_cls.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())

    model.distill_factor = 0.  # stopped: the student's losses only
    assert not {'loss_logit_kd', 'loss_pkd'} & set(model.loss(*_batch()))


def test_same_seed_same_student_as_without_kd(teachers):
    """Building the teacher and the adapters draws no random numbers from the training's stream."""
    student_cfg = detector_config('retinanet', '', '').model
    torch.manual_seed(0)
    plain = MODELS.build(copy.deepcopy(student_cfg))
    after_plain = torch.rand(3)
    torch.manual_seed(0)
    distiller = MODELS.build(distiller_cfg(student_cfg, teachers['fcos']))
    assert torch.equal(torch.rand(3), after_plain)
    student = distiller.student.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, student[key]), key


def test_teacher_outside_the_module_tree(teachers):
    model = MODELS.build(distiller_cfg(detector_config('retinanet', '', '').model, teachers['fcos']))
    teacher_params = {id(p) for p in model.teacher.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    assert not any(k.startswith('teacher') for k in model.state_dict())
    assert model.data_preprocessor is model.student.data_preprocessor
    copied = copy.deepcopy(model)  # EMAHook's copy shares the frozen teacher
    assert copied.teacher is model.teacher and copied.student is not model.student
    model.train()
    assert model.student.training and not model.teacher.training


def _layout(strides=(8, 16, 32, 64, 128), channels=32, priors=9, classes=3, sigmoid=True) -> DenseHeadLayout:
    return DenseHeadLayout('Test (TestHead)', tuple(strides), channels, (priors, ) * len(strides), classes,
                           sigmoid)


def test_pkd_loss_is_scale_free_and_adapts_channels():
    torch.manual_seed(0)
    loss = PKDFeatureLoss(_layout(), _layout(), loss_weight=1.0)
    feats = [torch.randn(2, 32, s, s) for s in (16, 8, 4, 2, 1)]
    scaled = [f * torch.linspace(0.5, 3, 32).view(1, -1, 1, 1) + 4 for f in feats]  # per-channel affine
    assert loss.adapters is None and loss(feats, scaled).item() == pytest.approx(0, abs=1e-5)
    assert loss(feats, [torch.randn_like(f) for f in feats]).item() > 0.1
    adapted = PKDFeatureLoss(_layout(channels=32), _layout(channels=64), strides=(8, 16))
    assert adapted.pairs == ((0, 0), (1, 1)) and len(adapted.adapters) == 2
    assert adapted(feats, [torch.randn(2, 64, s, s) for s in (16, 8)]).item() > 0


@pytest.mark.parametrize('sigmoid', [True, False])
def test_logit_kd_loss(sigmoid):
    torch.manual_seed(0)
    classes = 3 if sigmoid else 4  # softmax heads add a background class
    layout = _layout(strides=(8, 16), priors=2, classes=classes, sigmoid=sigmoid)
    loss = DenseLogitKDLoss(layout, layout, temperature=2.0)
    scores = [torch.randn(2, 2 * classes, s, s) for s in (8, 4)]
    assert loss(scores, scores).item() == pytest.approx(0, abs=1e-5)
    assert loss([torch.randn_like(s) for s in scores], scores).item() > 0


def test_teacher_inputs_renormalized_for_a_caffe_teacher():
    """RGB ImageNet-normalised student inputs -> what a caffe-style BGR teacher would have been fed."""
    student = MODELS.build(dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                                std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32))
    teacher = MODELS.build(dict(type='DetDataPreprocessor', mean=[102.98, 115.95, 122.77], std=[1., 1., 1.],
                                bgr_to_rgb=False, pad_size_divisor=32))
    images = [torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8) for _ in range(2)]
    samples = [DetDataSample(metainfo=dict(img_shape=(50, 60))) for _ in range(2)]
    data = dict(inputs=images, data_samples=samples)
    expected = teacher(copy.deepcopy(data))['inputs']
    student_inputs = student(copy.deepcopy(data))['inputs']
    converted = renormalize(student_inputs, Normalization.of(student), Normalization.of(teacher), samples)
    assert converted.shape == expected.shape == (2, 3, 64, 64)
    assert torch.allclose(converted, expected, atol=1e-3)
    assert renormalize(student_inputs, Normalization.of(student), Normalization.of(student)) is student_inputs


def test_schedule_factor():
    hook = DistillScheduleHook(warmup=4, decay='linear', min_factor=0.2, stop=12)
    factors = [hook.factor(i, max_iters=20) for i in range(14)]
    assert factors[:6] == pytest.approx([0.25, 0.5, 0.75, 1., 1., 1 - 0.8 / 7])
    assert factors[11] == pytest.approx(0.2) and factors[12:] == [0., 0.]
    cosine = DistillScheduleHook(decay='cosine')
    assert [cosine.factor(i, 11) for i in (0, 5, 10)] == pytest.approx([1., 0.5, 0.])
    epochs = DistillScheduleHook(warmup=1, stop=2, by_epoch=True)
    assert [epochs.factor(i, 30, iters_per_epoch=10) for i in (0, 9, 10, 19, 20)] == [0.1, 1., 1., 1., 0.]


@pytest.mark.parametrize('kwargs', [dict(decay='step'), dict(warmup=-1), dict(min_factor=2.),
                                    dict(warmup=5, stop=5)])
def test_schedule_hook_bad_arguments(kwargs):
    with pytest.raises(ValueError, match='DistillScheduleHook'):
        DistillScheduleHook(**kwargs)


def test_schedule_hook_needs_a_distiller(data_root, tmp_path):
    cfg = detector_config('retinanet', data_root, str(tmp_path), hook=False)
    cfg.custom_hooks = [dict(type='DistillScheduleHook')]
    with pytest.raises(TypeError, match='needs a distiller as the model.*got RetinaNet'):
        Runner.from_cfg(cfg).train()


def _build(student: str, teacher_model: dict, checkpoint: str, losses: dict = PKD):
    teacher = dict(model=teacher_model, checkpoint=checkpoint)
    return MODELS.build(distiller_cfg(detector_config(student, '', '').model, teacher, losses))


def test_bad_teacher_input_fails_when_the_model_is_built(data_root, teachers, tmp_path):
    teacher = teachers['fcos']
    missing = str(tmp_path / 'missing.pth')
    cfg = kd_run_cfg('retinanet', dict(teacher, checkpoint=missing), data_root, str(tmp_path / 'run'))
    with pytest.raises(TeacherError, match=f'teacher_checkpoint {missing} does not exist: train the teacher'):
        Runner.from_cfg(cfg)  # the Runner builds the model: nothing has trained yet
    with pytest.raises(TeacherError, match='teacher_checkpoint is required'):
        _build('retinanet', teacher['model'], None)
    with pytest.raises(TeacherError, match='does not build: KeyError.*NoSuchDetector'):
        _build('retinanet', dict(teacher['model'], type='NoSuchDetector'), teacher['checkpoint'])
    with pytest.raises(TeacherError, match='teacher_config .*nowhere.py does not exist'):
        MODELS.build(dict(distiller_cfg(detector_config('retinanet', '', '').model, teacher),
                          teacher_config=str(tmp_path / 'nowhere.py')))
    mismatch = r'(?s)teacher_checkpoint .*retinanet.pth does not match.*keys missing'
    with pytest.raises(WeightsMismatchError, match=mismatch):
        _build('retinanet', teacher['model'], teachers['retinanet']['checkpoint'])


def test_mismatching_fpn_levels_are_named(tmp_path):
    """A teacher FPN at strides 4-64 for a student at 8-128."""
    teacher = teacher_model_cfg('fcos')
    teacher.neck.start_level = 0
    teacher.bbox_head.strides = (4, 8, 16, 32, 64)
    checkpoint = save_teacher(teacher, str(tmp_path / 'teacher.pth'))
    pattern = (r'(?s)FPN levels do not match: the teacher has no level with stride 128\..*'
               r'student RetinaNet \(RetinaHead\): level 0 stride 8 32 ch.*level 4 stride 128 32 ch.*'
               r'teacher FCOS \(FCOSHead\): level 0 stride 4 64 ch.*strides=\(8, 16, 32, 64\)')
    with pytest.raises(LayoutMismatchError, match=pattern):
        _build('retinanet', teacher, checkpoint)
    model = _build('retinanet', teacher, checkpoint, dict(loss_pkd=dict(type='PKDFeatureLoss',
                                                                        strides=(8, 16, 32, 64))))
    assert model.distill_losses.loss_pkd.pairs == ((0, 1), (1, 2), (2, 3), (3, 4))


def test_bad_loss_configs(teachers):
    fcos = teachers['fcos']
    layouts = r'same layout:\n  student RetinaNet \(RetinaHead\): 9 priors'
    with pytest.raises(LayoutMismatchError, match=layouts):
        _build('retinanet', fcos['model'], fcos['checkpoint'], dict(loss_kd=dict(type='DenseLogitKDLoss')))
    with pytest.raises(ValueError, match='must start with "loss_"'):
        _build('retinanet', fcos['model'], fcos['checkpoint'], dict(pkd=PKD['loss_pkd']))
    model = _build('retinanet', fcos['model'], fcos['checkpoint'], dict(PKD, loss_kd=None))  # None: off
    assert list(model.distill_losses) == ['loss_pkd']


@pytest.mark.parametrize('name, student_type, renormalized', [
    ('distill/pkd_retinanet-r50_retinanet-ghostnetv3_1x_coco.py', 'RetinaNet', False),
    ('distill/pkd_fcos-r50_fcos-ghostnetv3_1x_coco.py', 'FCOS', True),
    ('distill/shapes/kd_retinanet_ghostnetv3-0.5x_shapes.py', 'RetinaNet', False),
])
def test_shipped_kd_configs(name, student_type, renormalized, tmp_path):
    """What the KD configs promise (test_configs_build.py builds every config): the student, no adapters,
    both KD losses, re-normalised inputs for the caffe-style FCOS teacher, the FPN fed right."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    assert cfg.pretty_text  # the Runner logs it
    cfg.merge_from_dict({'model.teacher_checkpoint': local_teacher(cfg.model, tmp_path, MODELS)})
    backbone, neck = cfg.model.student.backbone, cfg.model.student.neck
    assert neck.in_channels == GhostNetV3.out_channels_for(backbone.widen_factor, backbone.out_indices)
    model = MODELS.build(cfg.model)
    assert type(model.student).__name__ == student_type
    assert (model._teacher.normalization != model._teacher.student_normalization) == renormalized
    assert set(model.distill_losses) == {'loss_pkd', 'loss_logit_kd'}
    assert model.distill_losses.loss_pkd.adapters is None  # same FPN channels


def test_adapters_keep_a_gradient_once_distillation_stops(teachers):
    """After the schedule's stop the teacher is not run, but learnable adapters (32 -> 64 channels) must still
    get a gradient: DDP with find_unused_parameters=False (MMEngine's default) fails on any that do not."""
    model = MODELS.build(distiller_cfg(detector_config('retinanet', '', '').model, teachers['fcos']))
    model.train()
    model.distill_factor = 0.
    losses = model.loss(*_batch())
    assert losses['loss_distill_off'].item() == 0 and 'loss_pkd' not in losses
    sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if 'loss' in k).backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused


def test_pkd_standardizes_half_precision_features_in_float32():
    """Under AMP the FPN features arrive in half precision; their per-channel statistics are taken in float32
    (bf16 sums over a map lose most digits and the loss with them)."""
    torch.manual_seed(0)
    loss = PKDFeatureLoss(_layout(), _layout(), loss_weight=1.0)
    student = [(torch.randn(2, 32, s, s) * 3 + 5).bfloat16() for s in (64, 32, 16, 8, 4)]
    teacher = [(torch.randn(2, 32, s, s) * 2 - 1).bfloat16() for s in (64, 32, 16, 8, 4)]
    exact = loss([f.double() for f in student], [f.double() for f in teacher])
    half = loss(student, teacher)
    assert half.dtype == torch.float32
    assert abs(half.item() - exact.item()) < 1e-4 * exact.item()
