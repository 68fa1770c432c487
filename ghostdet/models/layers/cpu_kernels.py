"""ghostdet's C++ CPU kernels (``csrc/``), compiled on first use.

Two kernels for the backbone's depthwise-heavy blocks, whose cost on a CPU is memory passes over
full-size maps rather than arithmetic: the train-mode depthwise re-parameterizable block
(``depthwise_train``) and a ghost module's output at inference (``ghost_module_kernel``). Both compute
what the PyTorch modules compute, in fewer passes, and both fall back to those modules when the kernels
are unavailable.

Built by torch.utils.cpp_extension (~1 min on 2 cores, cached under TORCH_EXTENSIONS_DIR per CPU
instruction set). Without a compiler ghostdet warns once and runs the PyTorch modules (same numbers,
slower). ``GHOSTDET_CPU_KERNELS=0`` turns the kernels off.
"""
import functools
import hashlib
import logging
import os
import os.path as osp
import shutil
import sys
import warnings

import torch

_CSRC = osp.join(osp.dirname(__file__), 'csrc')
SOURCES = ('bindings.cpp', 'depthwise_branches.cpp', 'ghost_module.cpp')
SWITCH = 'GHOSTDET_CPU_KERNELS'


def takes(map_: torch.Tensor) -> bool:
    """Whether a tensor is what the kernels read: a 4-d float32 CPU map in channels-last memory format."""
    return (map_.dim() == 4 and map_.dtype == torch.float32 and map_.device.type == 'cpu'
            and map_.is_contiguous(memory_format=torch.channels_last))


def enabled() -> bool:
    """Whether the kernels may run: not switched off by ``GHOSTDET_CPU_KERNELS=0`` and built."""
    return os.environ.get(SWITCH, '1') != '0' and extension() is not None


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled kernel module, or None (with one warning) when it cannot be built."""
    logger = logging.getLogger('torch.utils.cpp_extension')
    level = logger.level
    logger.setLevel(logging.ERROR)  # its import warns that there is no CUDA, which is irrelevant here
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    if shutil.which('ninja') is None:  # a venv's ninja sits next to its python, which need not be on PATH
        os.environ['PATH'] = osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')
    try:
        return cpp_extension.load(
            name=f'ghostdet_cpu_kernels_{_build_tag()}', sources=[osp.join(_CSRC, s) for s in SOURCES],
            extra_cflags=['-O3', '-march=native', '-ffp-contract=fast', '-fopenmp'],
            extra_ldflags=['-fopenmp'])
    except (OSError, RuntimeError, ImportError) as error:  # no compiler / ninja / headers
        warnings.warn(f'ghostdet: could not build the CPU kernels ({error}); the backbone runs its PyTorch '
                      'modules instead (same numbers, slower). Install a C++ compiler and ninja to fix.')
        return None


def _build_tag() -> str:
    """A short hash of the CPU's instruction-set flags: the kernels are built with -march=native, so a
    cache shared between different machines must not hand one's build to the other."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith('flags')), '')
    except OSError:
        flags = ''
    return hashlib.sha1(flags.encode()).hexdigest()[:8]
