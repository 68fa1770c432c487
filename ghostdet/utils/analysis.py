"""Parameter and MAC counts of models through MMEngine's analysis tools (not a home-made counter): the
one count behind every number that ghostdet's tools print (get_flops, benchmark, demo).

MMEngine's ``FlopAnalyzer`` counts one multiply-accumulate as one "flop": the numbers are MACs, the unit
the GhostNetV3 paper (and mmdet's get_flops) calls FLOPs.
"""
import logging
from contextlib import nullcontext
from typing import Dict, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.logging import MMLogger

from ..deploy.verify import branch_by_branch

DETECTOR_PARTS = ('backbone', 'neck', 'bbox_head')


class RawOutputs(nn.Module):
    """A detector's network part (backbone, neck, head) as a plain module: ``x -> model._forward(x)``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor):
        return self.detector._forward(x)


def complexity_by_part(model: nn.Module, size: Tuple[int, int] = (640, 640),
                       branches: bool = False) -> Dict[str, Tuple[int, int]]:
    """``{part: (parameters, MACs)}`` for one ``size`` image, parts = backbone/neck/bbox_head and
    ``total`` for a detector (counted without NMS), only ``total`` for any other module.

    ``branches``: count a train-form model as it trains, every branch of ghostdet's re-parameterizable
    blocks on its own (counted in eval mode they fuse on the fly, and would cost what the fused form
    costs).
    """
    is_detector = hasattr(model, '_forward')
    module = RawOutputs(model) if is_detector else model
    prefix = 'detector.' if is_detector else ''
    was_training = model.training
    model.eval()
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)  # the analyzer warns about every uncounted elementwise op
    try:
        with torch.no_grad(), branch_by_branch(model) if branches else nullcontext():
            macs = FlopAnalyzer(module, (torch.zeros(1, 3, *size), )).by_module()
    finally:
        logger.setLevel(level)
        model.train(was_training)
    params = parameter_count(module)
    parts = [p for p in DETECTOR_PARTS if is_detector and hasattr(model, p)]
    result = {part: (params[prefix + part], macs[prefix + part]) for part in parts}
    result['total'] = (params[''], macs[''])
    return result


def count_params_and_macs(model: nn.Module, size: Tuple[int, int] = (640, 640),
                          branches: bool = False) -> Tuple[int, int]:
    """(parameters, MACs) of the whole model for one ``size`` image (``branches``: as
    :func:`complexity_by_part`)."""
    return complexity_by_part(model, size, branches)['total']
