"""Which mmcv ops a machine needs (CPU or CUDA, and for which GPUs), and whether the installed ones fit.

No mmcv 2.1.0 wheel exists for torch 2.14, so ``tools/setup_env.sh`` builds one and caches it under a
*flavour* name: ``torch2.14.1-cpu``, or ``torch2.14.1-cu130-sm90`` for CUDA ops compiled for sm_90.
A CPU-only build imports fine on a GPU machine and fails only deep in the first iteration (focal
loss, NMS), so the runner checks the flavour before it starts.

Runs as a script before ghostdet is installed (``python ghostdet/utils/mmcv_build.py flavour``):
only the standard library and torch are imported at the top.
"""
import os
import re
import sys
from typing import Mapping, NamedTuple, Optional

import torch

CUDA_SWITCH = 'GHOSTDET_CUDA'
ARCH_LIST = 'TORCH_CUDA_ARCH_LIST'
GPU_INSTALL = f'{CUDA_SWITCH}=1 make install'
ARCH_EXAMPLES = '9.0 for H100/H200, 8.0 for A100, 8.6 for A10/RTX 30xx, 8.9 for L4/L40/RTX 40xx'


class Flavour(NamedTuple):
    """A cache name for an mmcv build, and the CUDA architectures it compiles for ('' for CPU)."""

    name: str
    arch_list: str

    @property
    def cuda(self) -> bool:
        return bool(self.arch_list)


def wanted_flavour(env: Mapping[str, str] = os.environ,
                   gpu_capabilities: Optional[list] = None) -> Flavour:
    """CUDA ops when asked (``GHOSTDET_CUDA=1``) or when a GPU is visible; CPU ops otherwise.

    ``gpu_capabilities`` lists the visible GPUs' (major, minor); by default they are read from torch.
    Without a GPU the architectures must be named, since nothing here can tell which GPUs will run it.
    """
    if gpu_capabilities is None:
        gpu_capabilities = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    mode = env.get(CUDA_SWITCH, 'auto').strip().lower() or 'auto'
    if mode not in ('auto', '0', '1'):
        raise ValueError(f'{CUDA_SWITCH}={mode!r}: use 1 (build CUDA ops), 0 (CPU ops) or leave it unset '
                         '(CUDA ops when a GPU is visible)')
    torch_tag = 'torch' + torch.__version__.split('+')[0]
    if mode == '0' or (mode == 'auto' and not gpu_capabilities):
        return Flavour(f'{torch_tag}-cpu', '')
    if torch.version.cuda is None:
        raise ValueError(f'{CUDA_SWITCH}=1, but torch {torch.__version__} was built without CUDA: '
                         'install a CUDA build of torch first')
    arch_list = env.get(ARCH_LIST, '').strip()
    if not arch_list:
        if not gpu_capabilities:
            raise ValueError(f'{CUDA_SWITCH}=1 and no GPU is visible: name the GPUs to build for, e.g. '
                             f'{ARCH_LIST}=9.0 {GPU_INSTALL} ({ARCH_EXAMPLES}; several: "8.0;9.0")')
        arch_list = ';'.join(sorted({f'{major}.{minor}' for major, minor in gpu_capabilities}))
    archs = [arch for arch in re.split(r'[;\s]+', arch_list) if arch]
    if not all(re.fullmatch(r'\d+\.\d+a?(\+PTX)?', arch) for arch in archs):
        raise ValueError(f'{ARCH_LIST}={arch_list!r}: expected compute capabilities such as "9.0" or '
                         '"8.0;8.6+PTX"')
    sm = '.'.join(arch.replace('.', '').replace('+PTX', 'ptx') for arch in archs)
    cuda_tag = 'cu' + torch.version.cuda.replace('.', '')
    return Flavour(f'{torch_tag}-{cuda_tag}-sm{sm}', ';'.join(archs))


def installed_ops_have_cuda() -> bool:
    """Whether the installed mmcv's compiled ops include CUDA kernels."""
    from mmcv.ops import get_compiling_cuda_version
    return get_compiling_cuda_version() != 'not available'


def check_mmcv_ops(gpu_visible: Optional[bool] = None) -> None:
    """Fail at start, with the command that fixes it, when a GPU run has CPU-only mmcv ops.

    Otherwise mmdet's focal loss and NMS fail at the first iteration ("implementation for device
    cuda:0 not found").
    """
    if gpu_visible is None:
        gpu_visible = torch.cuda.is_available()
    if gpu_visible and not installed_ops_have_cuda():
        raise RuntimeError(
            "a GPU is visible but mmcv's ops were built for the CPU only, so focal loss and NMS would "
            f'fail on CUDA tensors. Rebuild them with CUDA: `{GPU_INSTALL}` (add '
            f'{ARCH_LIST}=... on a machine without a GPU: {ARCH_EXAMPLES}), or hide the GPUs with '
            'CUDA_VISIBLE_DEVICES= to run on the CPU')


def main(argv: list) -> int:
    """``flavour``: print the wanted flavour's name and arch list; ``installed``: cuda or cpu."""
    if argv == ['flavour']:
        try:
            flavour = wanted_flavour()
        except ValueError as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
        print(flavour.name, flavour.arch_list)
        return 0
    if argv == ['installed']:
        print('cuda' if installed_ops_have_cuda() else 'cpu')
        return 0
    print('usage: mmcv_build.py flavour|installed', file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
