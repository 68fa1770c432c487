"""Which mmcv ops an install builds (the cached wheel's flavour), and the start-up check on GPU machines."""
import pytest
import torch

from ghostdet.utils.mmcv_build import check_mmcv_ops, installed_ops_have_cuda, wanted_flavour

TORCH = 'torch' + torch.__version__.split('+')[0]
needs_cuda_torch = pytest.mark.skipif(torch.version.cuda is None, reason='this torch build has no CUDA')


def test_cpu_ops_without_a_gpu_or_when_asked():
    assert wanted_flavour({}, gpu_capabilities=[]) == (f'{TORCH}-cpu', '')
    assert wanted_flavour({'GHOSTDET_CUDA': '0'}, gpu_capabilities=[(9, 0)]) == (f'{TORCH}-cpu', '')
    assert not wanted_flavour({}, gpu_capabilities=[]).cuda


@needs_cuda_torch
def test_cuda_ops_name_their_toolkit_and_architectures():
    cuda = 'cu' + torch.version.cuda.replace('.', '')
    visible = wanted_flavour({}, gpu_capabilities=[(9, 0), (8, 0), (9, 0)])
    assert visible == (f'{TORCH}-{cuda}-sm80.90', '8.0;9.0') and visible.cuda
    login_node = wanted_flavour({'GHOSTDET_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '8.6 9.0+PTX'}, gpu_capabilities=[])
    assert login_node == (f'{TORCH}-{cuda}-sm86.90ptx', '8.6;9.0+PTX')


@needs_cuda_torch
@pytest.mark.parametrize('env, message', [
    ({'GHOSTDET_CUDA': '1'}, r'no GPU is visible: name the GPUs to build for, e.g. TORCH_CUDA_ARCH_LIST=9\.0'),
    ({'GHOSTDET_CUDA': 'yes'}, r"GHOSTDET_CUDA='yes': use 1 .*, 0 .* or leave it unset"),
    ({'GHOSTDET_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': 'sm_90'}, r'expected compute capabilities such as "9\.0"'),
])
def test_unbuildable_requests_say_what_to_set(env, message):
    with pytest.raises(ValueError, match=message):
        wanted_flavour(env, gpu_capabilities=[])


@pytest.mark.skipif(installed_ops_have_cuda(), reason='needs the CPU-only mmcv ops that CPU machines install')
def test_cpu_only_ops_on_a_gpu_machine_fail_at_start_with_the_fix():
    check_mmcv_ops(gpu_visible=False)
    with pytest.raises(RuntimeError, match=r"mmcv's ops were built for the CPU only.*`GHOSTDET_CUDA=1 make install`"):
        check_mmcv_ops(gpu_visible=True)
