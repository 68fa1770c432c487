"""Helpers shared by ghostdet's tests (as ``mmdet.testing``): small models, data and runs that real
MMEngine runners and MMDetection detectors train and evaluate in seconds on a CPU."""
from ..exactness import randomize_bn
from .checkpoints import (as_saved_on_gpu, local_teacher, official_layout, saved_pair, trained_like_detector,
                          without_pretrained, write_detector_files)
from .detectors import (REPO, detector_config, evaluate, logged_losses, loss_and_backward, teacher_model_cfg,
                        train)
from .modules import RELU, max_rel_diff, random_depthwise_block, random_ghost_module
from .tools import load_tool, run_tool

__all__ = [
    'REPO', 'RELU', 'as_saved_on_gpu', 'detector_config', 'evaluate', 'load_tool', 'local_teacher', 'logged_losses',
    'loss_and_backward', 'max_rel_diff', 'official_layout', 'random_depthwise_block', 'random_ghost_module',
    'randomize_bn', 'run_tool', 'saved_pair', 'teacher_model_cfg', 'train', 'trained_like_detector', 'without_pretrained',
    'write_detector_files'
]
