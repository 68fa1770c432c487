"""Checkpoint files for tests, made here: nothing can be downloaded, so teachers, official-layout
backbones and trained-like detectors are written from randomly initialised models."""
import os.path as osp
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import Registry, init_default_scope

from ..deploy import (DEPLOY_CONFIG_NAME, build_cpu_model, checkpoint_weights, fuse_model, load_fused_model,
                      load_weights, read_checkpoint, to_deploy_config, write_deploy_config)
from ..models.distill.teacher import teacher_model_config
from .detectors import detector_config

StateDict = Dict[str, torch.Tensor]


def without_pretrained(node: Any) -> None:
    """Drop every ``Pretrained`` init_cfg in place: no ImageNet weights here, a build test needs none."""
    if isinstance(node, dict):
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        for value in node.values():
            without_pretrained(value)
    elif isinstance(node, list):
        for value in node:
            without_pretrained(value)


def as_saved_on_gpu(src: Union[str, Path], dst: Union[str, Path]) -> None:
    """Copy the checkpoint ``src`` to ``dst`` as ``torch.save`` writes it on a GPU: the same file, with every
    storage's location ``cuda:0`` instead of ``cpu`` (no GPU here to write one)."""
    with zipfile.ZipFile(src) as source, zipfile.ZipFile(dst, 'w', zipfile.ZIP_STORED) as target:
        for entry in source.infolist():
            data = source.read(entry.filename)
            if entry.filename.endswith('/data.pkl'):  # protocol 2: BINUNICODE, 4-byte length
                data = data.replace(b'X\x03\x00\x00\x00cpu', b'X\x06\x00\x00\x00cuda:0')
            target.writestr(entry, data)


def saved_pair(work_dir: str, model_cfg: dict, name: str) -> Tuple[nn.Module, nn.Module]:
    """The two models ReparamCheckpointHook leaves in ``work_dir`` for checkpoint ``name``: the training
    config's model with ``name.pth``'s weights, and the deploy config's model with ``name_deploy.pth``'s
    (which must be fused already), both on the CPU in eval mode."""
    unfused = build_cpu_model(model_cfg)
    load_weights(unfused, checkpoint_weights(read_checkpoint(osp.join(work_dir, f'{name}.pth'))))
    fused, num_fused = load_fused_model(Config.fromfile(osp.join(work_dir, DEPLOY_CONFIG_NAME)),
                                        read_checkpoint(osp.join(work_dir, f'{name}_deploy.pth')))
    assert num_fused == 0, f'{name}_deploy.pth left blocks to fuse'
    return unfused.eval(), fused


def local_teacher(model_cfg: dict, out_dir: Union[str, Path], registry: Registry) -> str:
    """A randomly initialised checkpoint of the distiller config's teacher, written to ``out_dir``
    (model-zoo URLs can't be fetched); returns its path."""
    teacher_cfg, _ = teacher_model_config(model_cfg['teacher_config'])
    without_pretrained(teacher_cfg)
    path = osp.join(out_dir, 'teacher.pth')
    torch.save({'state_dict': registry.build(teacher_cfg).state_dict()}, path)
    return path


def official_layout(state: StateDict) -> StateDict:
    """timm's GhostNetV3 weights under the authors' key names: branch BNs are ``bn`` (timm renamed them
    ``bn1``), plus a thop counter."""
    out = {}
    for key, value in state.items():
        if '.ghost' in key or '.dw_rpr_' in key:
            key = key.replace('.bn1.', '.bn.')
        out[key] = value
    out['blocks.0.0.total_ops'] = torch.zeros(1)
    return out


def trained_like_detector(model_cfg: dict) -> nn.Module:
    """An unfused detector in eval mode whose BN statistics come from forward passes: non-trivial to
    fuse, and scores stay spread out (random statistics saturate them, making NMS order arbitrary)."""
    torch.manual_seed(0)
    model = build_cpu_model(model_cfg)
    model.init_weights()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.extract_feat(torch.randn(2, 3, 128, 128))
    return model.eval()


def write_detector_files(kind: str, out_dir: str) -> Dict[str, str]:
    """A trained-like :func:`detector_config` detector of ``kind`` as training config + checkpoint
    (``train.py``, ``train.pth``) and fused, as deploy config + checkpoint (``deploy.py``,
    ``deploy.pth``), in ``out_dir``; returns file name -> path."""
    paths = {name: osp.join(out_dir, name) for name in ('train.py', 'train.pth', 'deploy.py', 'deploy.pth')}
    detector_config(kind, 'unused/', 'unused/').dump(paths['train.py'])
    cfg = Config.fromfile(paths['train.py'])
    init_default_scope('mmdet')
    model = trained_like_detector(cfg.model)
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), paths['train.pth'])
    fuse_model(model)
    torch.save(dict(meta=dict(deploy=True), state_dict=model.state_dict()), paths['deploy.pth'])
    write_deploy_config(paths['deploy.py'], to_deploy_config(cfg))
    return paths
