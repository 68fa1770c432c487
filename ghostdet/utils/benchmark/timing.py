"""The one timer behind every benchmark number, and the calls it times: an eager forward, a train step,
an onnxruntime run, a detector's whole inference on an image."""
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


def image_pipeline(test_pipeline: Sequence[dict]) -> Callable[[dict], dict]:
    """A detector config's test pipeline for an image array (loading from memory, no annotations)."""
    from mmcv.transforms import Compose
    steps = [dict(t) for t in test_pipeline if t['type'] not in ('LoadAnnotations', 'mmdet.LoadAnnotations')]
    if steps and 'LoadImageFromFile' in steps[0]['type']:
        steps[0] = dict(type='mmdet.LoadImageFromNDArray')
    return Compose(steps)


def end_to_end_fn(model: nn.Module, test_pipeline: Sequence[dict], size: Tuple[int, int]) -> Callable[[], object]:
    """What a user waits for per image: a random ``size`` uint8 image through the test pipeline (resize
    and pad to the detector's own input size), the data preprocessor, the network, box decoding and
    NMS. A copy of ``model`` with ``score_thr`` 0, so that every detector runs NMS over all of its
    ``nms_pre`` candidates (random weights score below the usual thresholds)."""
    model = copy.deepcopy(model).eval()
    head = getattr(model, 'bbox_head', None)
    if head is not None and head.test_cfg is not None:
        head.test_cfg['score_thr'] = 0.
    pipeline = image_pipeline(test_pipeline)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)

    def run() -> object:
        data = pipeline(dict(img=image, img_id=0))
        with torch.inference_mode():
            return model.test_step(dict(inputs=[data['inputs']], data_samples=[data['data_samples']]))
    return run


def in_layout(model: nn.Module, x: torch.Tensor, layout: str) -> Tuple[nn.Module, torch.Tensor]:
    """A copy of the model and the input in a memory format (``default``: as built, NCHW input)."""
    if layout == 'default':
        return model, x
    memory_format = MEMORY_FORMATS[layout]
    return copy.deepcopy(model).to(memory_format=memory_format), x.contiguous(memory_format=memory_format)
