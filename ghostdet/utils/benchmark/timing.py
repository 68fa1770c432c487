"""The one timer behind every benchmark number, and the calls it times: an eager forward, a train step,
an onnxruntime run."""
import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ...deploy.onnx import INPUT_NAME, flatten_outputs

MEMORY_FORMATS = {'default': torch.contiguous_format, 'channels_last': torch.channels_last}


@dataclass
class Stats:
    """Milliseconds per call."""
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> 'Stats':
        p10, median, p90 = np.percentile(np.asarray(seconds) * 1e3, [10, 50, 90])
        return cls(float(median), float(p10), float(p90))


def time_interleaved(fns: Dict[Hashable, Callable[[], object]], warmup: int,
                     repeats: int) -> Dict[Hashable, Stats]:
    """Time every function ``repeats`` times after ``warmup`` calls, round-robin over functions, so
    that a change of machine load hits every function alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    seconds: Dict[Hashable, List[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[key].append(time.perf_counter() - start)
    return {key: Stats.of(s) for key, s in seconds.items()}


def forward_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One inference call (the model's current mode, no autograd)."""

    def run() -> object:
        with torch.inference_mode():
            return model(x)
    return run


def train_step_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Forward + backward of the sum of all outputs (puts ``model`` in train mode; gradients are reset
    each step)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def run() -> object:
        for p in params:
            p.grad = None
        loss = sum(t.float().sum() for t in flatten_outputs(model(x)))
        loss.backward()
        return loss
    return run


def onnx_fn(session: Any, x: torch.Tensor) -> Callable[[], object]:
    """One onnxruntime call of an exported model (:func:`ghostdet.deploy.onnx.export_onnx`)."""
    array = x.numpy()
    return lambda: session.run(None, {INPUT_NAME: array})


def in_layout(model: nn.Module, x: torch.Tensor, layout: str) -> Tuple[nn.Module, torch.Tensor]:
    """A copy of the model and the input in a memory format (``default``: as built, NCHW input)."""
    if layout == 'default':
        return model, x
    memory_format = MEMORY_FORMATS[layout]
    return copy.deepcopy(model).to(memory_format=memory_format), x.contiguous(memory_format=memory_format)
