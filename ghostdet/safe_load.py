"""Load MMEngine checkpoints, local or from a URL, with torch's safe unpickler (``weights_only=True``).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; on current torch (>= 2.6) that means safe
loading, which refuses two things runner checkpoints hold: ``HistoryBuffer`` objects of the message hub
(pickled with references to their methods via ``getattr``) and numpy scalars. Instead of switching safe
loading off for every file (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), importing ghostdet:

* makes ``HistoryBuffer`` pickle as plain data (two lists and an int), so checkpoints written from now
  on hold nothing but tensors, containers, numbers and strings;
* allows exactly the constructors needed to read back runner checkpoints and the authors' GhostNetV3
  file (``HistoryBuffer``, numpy's scalar/array reconstructors and ``argparse.Namespace``, the
  authors' training ``args``): each only rebuilds data from values that the restricted unpickler has
  already vetted, none calls arbitrary code (a ``Namespace`` is made by ``__new__`` and gets its
  attributes by a plain ``__dict__`` update);
* loads every checkpoint MMEngine fetches, by any scheme, with ``weights_only=True`` and explains a
  refusal with one message (:func:`_refusal`: the file or URL, the global that was refused, the fix).

How each of MMEngine's schemes (``CheckpointLoader``) is covered:

* ``''`` (local files): replaced by :func:`load_from_local_safely` (``register_scheme(force=True)``).
* ``http://``, ``https://``: ``load_from_http`` downloads with ``load_url``, i.e.
  ``torch.hub.load_state_dict_from_url``, whose ``weights_only`` defaults to False: a full unpickler
  that runs whatever code the file names. ``torchvision://``/``modelzoo://``, ``open-mmlab://``/
  ``openmmlab://`` (URL entries) and ``mmcls://`` all end in ``load_from_http``. Each of these
  module-level functions looks ``load_url`` up in ``mmengine.runner.checkpoint``'s globals when it
  runs, so rebinding that one name to :func:`load_url_safely` covers all of them, whoever calls them
  (``CheckpointLoader``, ``_load_checkpoint``/``load_checkpoint``, the Runner's ``load_from`` and
  ``resume``, ``Pretrained`` init, a direct call of ``load_from_http``).
* ``pavi://``, ``s3://``, ``petrel://`` and an ``open-mmlab://`` entry that names a file under
  MMEngine's home read the file themselves with ``torch.load`` and no ``weights_only``: safe on
  torch >= 2.6 (with the same allow-list, which is process-wide). Every registered non-local scheme is
  re-registered (``force=True``) wrapped by :func:`_explaining_refusal`, so their refusals read as the
  others do.

``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` (never set by ghostdet) cannot undo the local and URL loaders, which
pass ``weights_only=True`` explicitly; it would turn the ``torch.load`` calls of the file-reading schemes
above into full unpickling. Not covered: code outside MMEngine that calls ``torch.hub`` itself (timm or
torchvision ``pretrained=True``), and schemes registered after ``import ghostdet`` (none in this stack).
"""
import argparse
import functools
import os.path as osp
import pickle
import re
from typing import Any, Callable, List, Optional, Tuple
from urllib.error import URLError
from urllib.parse import urlparse

import mmengine.runner.checkpoint as mmengine_checkpoint
import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

Loader = Callable[..., Any]


def _reduce_history_buffer(self: HistoryBuffer) -> Tuple[type, Tuple[List, List, int]]:
    return HistoryBuffer, (self._log_history.tolist(), self._count_history.tolist(), self.max_length)


def _numpy_safe_globals() -> List[Any]:
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    return [np._core.multiarray.scalar, np._core.multiarray._reconstruct, np.ndarray, np.dtype,
            *dtype_classes]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that torch's safe loader refuses, with the reason and the way out."""


class CheckpointDownloadError(ConnectionError):
    """A checkpoint URL that cannot be reached, with the file to fetch by hand and where it goes."""


def _refusal(source: str, err: pickle.UnpicklingError, copy: Optional[str] = None) -> UnsafeCheckpointError:
    """The one explanation of a refused checkpoint; ``copy``: where a downloaded file was stored."""
    found = re.search(r'Unsupported global: GLOBAL (\S+)', str(err))
    culprit = found[1] if found else str(err).splitlines()[0]
    file = f'its downloaded copy {copy}' if copy else 'it'
    return UnsafeCheckpointError(
        f'{source} cannot be loaded safely (torch.load weights_only=True): it holds {culprit}, which is '
        'not plain data and could run code when unpickled (e.g. a checkpoint written by an MMEngine run '
        'without ghostdet imported). ghostdet keeps torch\'s safe loading on. If you trust this file, '
        f're-save {file} in a trusted session (torch.load(path, weights_only=False), then torch.save) '
        'and load that copy instead.')


def _reachable(map_location: Any) -> Any:
    """``None`` (tensors back on the device that saved them) becomes the CPU where CUDA is absent, so that a
    checkpoint written on a GPU loads on a CPU machine, as MMEngine's runner loads with ``'cpu'``."""
    return 'cpu' if map_location is None and not torch.cuda.is_available() else map_location


def load_from_local_safely(filename: str, map_location: Any = None) -> Any:
    """MMEngine's loader for local files, with safe loading and a clear error when it fails."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename} does not exist.')
    try:
        return torch.load(filename, map_location=_reachable(map_location), weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(filename, err) from err


def load_url_safely(url: str, model_dir: Optional[str] = None, map_location: Any = None,
                    progress: bool = True, check_hash: bool = False, file_name: Optional[str] = None) -> Any:
    """``torch.hub.load_state_dict_from_url`` (MMEngine's ``load_url``) with ``weights_only=True``; a URL that
    cannot be reached says which file to fetch and where to put it."""
    directory = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')  # as torch.hub names it
    cached = osp.join(directory, file_name or osp.basename(urlparse(url).path))
    try:
        return torch.hub.load_state_dict_from_url(url, model_dir=model_dir, map_location=_reachable(map_location),
                                                  progress=progress, check_hash=check_hash,
                                                  file_name=file_name, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(url, err, cached) from err
    except (URLError, TimeoutError, ConnectionError) as err:
        raise CheckpointDownloadError(
            f'could not download {url} ({getattr(err, "reason", err)}). Offline: download that file where the '
            f'internet is reachable and put it at {cached} (the download cache, used as it is), or point the '
            'config at a local copy or a mirror, e.g. --cfg-options model.backbone.init_cfg.checkpoint=PATH '
            '(load_from=PATH, model.teacher_checkpoint=PATH for those).') from err


def _explaining_refusal(loader: Loader) -> Loader:
    """``loader`` with torch's bare refusal turned into :class:`UnsafeCheckpointError` (idempotent)."""
    if getattr(loader, '_ghostdet_explains_refusal', False):
        return loader

    @functools.wraps(loader)  # keeps __name__: CheckpointLoader logs the backend from it
    def load(filename: str, map_location: Any = None) -> Any:
        try:
            return loader(filename, map_location)
        except pickle.UnpicklingError as err:
            raise _refusal(filename, err) from err

    load._ghostdet_explains_refusal = True
    return load


def enable_safe_checkpoint_loading() -> None:
    """Install the pickling rule, the allow-list and the loaders of every scheme (idempotent)."""
    HistoryBuffer.__reduce__ = _reduce_history_buffer
    torch.serialization.add_safe_globals([HistoryBuffer, argparse.Namespace, *_numpy_safe_globals()])
    mmengine_checkpoint.load_url = load_url_safely  # looked up by load_from_http at call time
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_from_local_safely)
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if prefix:
            CheckpointLoader.register_scheme(prefix, _explaining_refusal(loader), force=True)
