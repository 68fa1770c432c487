"""ghostdet's C++ CPU kernels (``csrc/``), compiled on first use.

Two kernels for the backbone's depthwise-heavy blocks, whose cost on a CPU is memory passes over
full-size maps rather than arithmetic: the train-mode depthwise re-parameterizable block
(``depthwise_train``) and a ghost module's output at inference (``ghost_module``). Both compute
what the PyTorch modules compute, in fewer passes, and both fall back to those modules when the kernels
are unavailable.

Built by torch.utils.cpp_extension (~1 min on 2 cores, cached under TORCH_EXTENSIONS_DIR per CPU
instruction set, torch and Python version; a finished build in a read-only cache is loaded as it is).
Without a compiler or a writable cache ghostdet warns once and runs the PyTorch modules (same numbers,
slower). The switch (``switch.py``) turns them off.
"""
import functools
import hashlib
import importlib.util
import logging
import os
import os.path as osp
import platform
import re
import shutil
import sys
import tempfile
import warnings
from typing import Optional

import torch

from .switch import use_cpu_kernels

_CSRC = osp.join(osp.dirname(__file__), 'csrc')
SOURCES = ('bindings.cpp', 'depthwise_branches.cpp', 'ghost_module.cpp')


def kernels_built() -> bool:
    """Whether the C++ kernels may run: switched on (see ``switch``) and built."""
    return use_cpu_kernels() and extension() is not None


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled kernel module, or None (with one warning) when it cannot be built or loaded."""
    logger = logging.getLogger('torch.utils.cpp_extension')
    level = logger.level
    logger.setLevel(logging.ERROR)  # its import warns that there is no CUDA, which is irrelevant here
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    name = f'ghostdet_cpu_kernels_{_build_tag(_cpuinfo())}'
    folder = osp.join(os.environ.get('TORCH_EXTENSIONS_DIR') or cpp_extension.get_default_build_root(), name)
    library = osp.join(folder, f'{name}.so')
    if not _writable(folder):
        if osp.isfile(library):  # built there before (the .so is linked last): load it as it is
            return _load_library(name, library)
        warnings.warn(f'ghostdet: could not build the CPU kernels: their build folder {folder} is not '
                      'writable; the backbone runs its PyTorch modules instead (same numbers, slower). Set '
                      'TORCH_EXTENSIONS_DIR to a writable folder to fix.')
        return None
    if shutil.which('ninja') is None:  # a venv's ninja sits next to its python, which need not be on PATH
        os.environ['PATH'] = osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')
    try:
        return cpp_extension.load(
            name=name, sources=[osp.join(_CSRC, s) for s in SOURCES], build_directory=folder,
            extra_cflags=['-O3', '-march=native', '-ffp-contract=fast', '-fopenmp'],
            extra_ldflags=['-fopenmp'])
    except (OSError, RuntimeError, ImportError) as error:  # no compiler / ninja / headers
        warnings.warn(f'ghostdet: could not build the CPU kernels ({error}); the backbone runs its PyTorch '
                      'modules instead (same numbers, slower). Install a C++ compiler and ninja to fix.')
        return None


def _writable(folder: str) -> bool:
    """Whether the build can write into ``folder``, created if missing. Tried rather than asked of
    os.access, which says yes to root on read-only mounts."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _load_library(name: str, library: str):
    """The kernel module from a finished build, without the build step (which needs the folder writable,
    a compiler and ninja); None, with a warning, if it does not load."""
    try:
        spec = importlib.util.spec_from_file_location(name, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except ImportError as error:
        warnings.warn(f'ghostdet: could not load the CPU kernels built in the read-only folder '
                      f'{osp.dirname(library)} ({error}); the backbone runs its PyTorch modules instead (same '
                      'numbers, slower). Set TORCH_EXTENSIONS_DIR to a writable folder to rebuild them.')
        return None


def _cpuinfo() -> Optional[str]:
    """The text of /proc/cpuinfo; None where there is none (macOS, Windows)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            return cpuinfo.read()
    except OSError:
        return None


# /proc/cpuinfo's lines that name the instruction set: x86 ``flags``, aarch64 ``Features``, s390x
# ``features``, RISC-V ``isa``, POWER ``cpu``.
_ISA_KEYS = ('flags', 'Features', 'features', 'isa', 'cpu')


def _build_tag(cpuinfo: Optional[str]) -> str:
    """The build's name suffix: torch's and Python's versions (the library links against their ABIs) and a
    short hash of the instruction set that -march=native compiles for (machine type and ``cpuinfo``'s
    feature lines), so that a cache shared between machines never hands a build to a CPU lacking its
    instructions (SIGILL). Where the features are unknown the hash takes the host name: no sharing then."""
    lines = sorted({line for line in (cpuinfo or '').splitlines() if line.split(':')[0].strip() in _ISA_KEYS})
    isa = [platform.machine(), *(lines or [platform.processor(), platform.node()])]
    digest = hashlib.sha1('\n'.join(isa).encode()).hexdigest()[:8]
    versions = re.sub(r'\W', '_', f'torch{torch.__version__}_py{sys.version_info[0]}{sys.version_info[1]}')
    return f'{versions}_{digest}'
