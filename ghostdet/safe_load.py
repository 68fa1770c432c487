"""Load MMEngine checkpoints with torch's safe unpickler (``weights_only=True``, torch >= 2.6).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; on current torch that means safe loading,
which refuses two things runner checkpoints hold: ``HistoryBuffer`` objects of the message hub (pickled
with references to their methods via ``getattr``) and numpy scalars. Instead of switching safe loading
off for every file (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), importing ghostdet:

* makes ``HistoryBuffer`` pickle as plain data (two lists and an int), so checkpoints written from now
  on hold nothing but tensors, containers, numbers and strings;
* allows exactly the constructors needed to read them back (``HistoryBuffer`` and numpy's scalar/array
  reconstructors, which rebuild data and cannot call arbitrary code);
* makes MMEngine's local-file loader explain a checkpoint that still cannot be loaded safely.
"""
import os.path as osp
import pickle
import re
from typing import Any, List, Tuple

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _reduce_history_buffer(self: HistoryBuffer) -> Tuple[type, Tuple[List, List, int]]:
    return HistoryBuffer, (self._log_history.tolist(), self._count_history.tolist(), self.max_length)


def _numpy_safe_globals() -> List[Any]:
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    return [np._core.multiarray.scalar, np._core.multiarray._reconstruct, np.ndarray, np.dtype,
            *dtype_classes]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that torch's safe loader refuses, with the reason and the way out."""


def load_from_local_safely(filename: str, map_location: Any = None) -> Any:
    """MMEngine's loader for local files, with safe loading and a clear error when it fails."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename} does not exist.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r'Unsupported global: GLOBAL (\S+)', str(err))
        culprit = found[1] if found else str(err).splitlines()[0]
        raise UnsafeCheckpointError(
            f'{filename} cannot be loaded safely (torch.load weights_only=True): it holds '
            f'{culprit}, which is not plain data (e.g. a checkpoint written by an MMEngine run without '
            'ghostdet imported). ghostdet keeps torch\'s safe loading on. If you trust this file, '
            're-save it in a trusted session (torch.load(weights_only=False), then torch.save), or '
            'run once with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (which disables the check for every '
            'file of that process).') from err


def enable_safe_checkpoint_loading() -> None:
    """Install the pickling rule, the allow-list and the loader (idempotent)."""
    HistoryBuffer.__reduce__ = _reduce_history_buffer
    torch.serialization.add_safe_globals([HistoryBuffer, *_numpy_safe_globals()])
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_from_local_safely)
