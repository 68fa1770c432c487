"""Parameter and MAC counts of detectors through MMEngine's analysis tools (not a home-made counter)."""
from typing import Tuple

import torch
import torch.nn as nn
from mmengine.analysis import get_model_complexity_info


class RawOutputs(nn.Module):
    """A detector's network part (backbone, neck, head) as a plain module: ``x -> model._forward(x)``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor):
        return self.detector._forward(x)


def count_params_and_macs(model: nn.Module, size: Tuple[int, int] = (640, 640)) -> Tuple[int, float]:
    """(parameters, multiply-accumulates) of one ``size`` image; detectors are counted without NMS."""
    module = RawOutputs(model) if hasattr(model, '_forward') else model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        info = get_model_complexity_info(module, inputs=(torch.zeros(1, 3, *size), ), show_table=False,
                                         show_arch=False)
    model.train(was_training)
    return sum(p.numel() for p in model.parameters()), float(info['flops'])
