"""The CPU kernels where they meet the rest of torch: double backward, NaN, torch.compile, the build cache
shared between machines and a read-only build cache."""
import copy
import ctypes
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

from ghostdet import ops
from ghostdet.ops import build
from ghostdet.testing import max_rel_diff, random_depthwise_block, random_ghost_module

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CHANNELS_LAST = torch.channels_last


def test_double_backward_through_the_depthwise_kernel_raises():
    """create_graph=True (gradient penalties) cannot differentiate the C++ backward: an error, not
    gradients silently missing the penalty's terms."""
    block = random_depthwise_block(8, 3, 1, True, True)
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=CHANNELS_LAST).requires_grad_(True)
    assert ops.rep_conv_bn_train(copy.deepcopy(block), x) is not None
    out = block(x)
    grad_x, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='differentiate twice'):
        (out.sum() + grad_x.square().sum()).backward()


@pytest.mark.parametrize('where', ['input', 'weight'])
def test_kernel_keeps_nan_where_the_modules_do(where):
    """A diverged model must not validate with finite numbers: ReLU keeps NaN, as torch.relu does."""
    module = random_ghost_module(8, 26, relu=True, dfc=False, deploy=True)  # 13 channels: lanes of 8, 4 and 1
    x = torch.randn(2, 8, 7, 9).contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad():
        if where == 'input':
            x[0, :, 2, 3] = float('nan')
        else:
            module.cheap.fused.bias[[0, 9, 12]] = float('nan')
        assert ops.ghost_module_output(x, module.primary, module.cheap, 26, None) is not None
        fast = module(x)
        with ops.cpu_kernels(False):
            slow = module(x)
    assert slow.isnan().any() and not slow.isnan().all()
    assert torch.equal(fast.isnan(), slow.isnan())
    finite = ~slow.isnan()
    assert max_rel_diff(slow[finite], fast[finite]) < 1e-6


def test_compiled_train_step_runs_the_pytorch_branches():
    """torch.compile sees PyTorch modules in training too: one graph, same outputs and gradients."""
    block = random_depthwise_block(8, 3, 1, True, True)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=CHANNELS_LAST)
    assert ops.rep_conv_bn_train(copy.deepcopy(block), x) is not None
    runs = []
    for net in (copy.deepcopy(block), torch.compile(copy.deepcopy(block), fullgraph=True, backend='eager')):
        inp = x.clone().requires_grad_(True)
        out = net(inp)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        runs.append([out, inp.grad, *(p.grad for p in net.parameters()), *net.buffers()])
    torch._dynamo.reset()
    kernel, compiled = runs
    assert max_rel_diff(kernel[0], compiled[0]) < 1e-5
    for a, b in zip(kernel[1:], compiled[1:]):  # gradients: BN's backward sums, rounded differently
        assert max_rel_diff(a, b) < 1e-3


AARCH64 = 'processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n'


def test_build_tag_keys_on_the_instruction_set_and_versions(monkeypatch):
    """-march=native builds must not be shared between CPUs with different instruction sets, nor between
    torch versions."""
    x86 = 'processor\t: 0\nflags\t\t: fpu vme de pse avx2 avx512f\nbugs\t\t: spectre_v1\n'
    tags = {build._build_tag(info) for info in (AARCH64, AARCH64.replace('cpuid', 'cpuid sve sve2'), x86)}
    assert len(tags) == 3
    second_core = AARCH64.replace('processor\t: 0', 'processor\t: 1')
    tag = build._build_tag(AARCH64)
    assert build._build_tag(AARCH64 + second_core) == tag
    monkeypatch.setattr(torch, '__version__', '2.99.0+cpu')
    assert build._build_tag(AARCH64).startswith('torch2_99_0_cpu_')
    assert build._build_tag(AARCH64) != tag
    unknown = build._build_tag(None)  # no /proc/cpuinfo: never shared with another host
    monkeypatch.setattr('platform.node', lambda: 'another-host')
    assert build._build_tag(None) != unknown


CHILD = '''
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    from ghostdet.ops import build
    module = build.extension()
print(json.dumps({'library': getattr(module, '__file__', None),
                  'warnings': [str(w.message) for w in caught if str(w.message).startswith('ghostdet:')]}))
'''


def obey_permissions() -> None:
    """Drop root's right to ignore file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the
    capability bounding set: the process about to start then sees read-only folders as any user does."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0):  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), 'prctl(PR_CAPBSET_DROP)')


def load_in_child(extensions_dir: str) -> dict:
    """What ``build.extension()`` gives a fresh process (its own lru_cache) with this extension
    cache and no compiler or ninja on PATH; as root, bound by file permissions."""
    env = {k: v for k, v in os.environ.items() if k not in ('CC', 'CXX')}
    env.update(PATH=os.devnull, TORCH_EXTENSIONS_DIR=extensions_dir, OMP_NUM_THREADS='1')
    try:
        done = subprocess.run([sys.executable, '-c', CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120, preexec_fn=obey_permissions if os.getuid() == 0 else None)
    except subprocess.SubprocessError as error:  # a root without CAP_SETPCAP cannot give up its rights
        pytest.skip(f'cannot make a read-only folder binding for root here: {error}')
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_unwritable_cache_without_a_build_says_so(tmp_path):
    not_a_folder = tmp_path / 'file'
    not_a_folder.write_text('')
    result = load_in_child(str(not_a_folder / 'cache'))
    assert result['library'] is None and len(result['warnings']) == 1
    message = result['warnings'][0]
    assert str(not_a_folder / 'cache') in message and 'not writable' in message
    assert 'TORCH_EXTENSIONS_DIR' in message and 'compiler' not in message


def chmod_tree(folder: str, folder_mode: int, file_mode: int) -> None:
    for root, _, files in os.walk(folder):
        os.chmod(root, folder_mode)
        for name in files:
            os.chmod(osp.join(root, name), file_mode)


def test_read_only_cache_with_a_build_loads_it(tmp_path):
    """A finished build in a cache this process cannot write (a shared, read-only cache) is loaded as it
    is: no compiler, no ninja, nothing written."""
    built = build.extension()
    if built is None:
        pytest.skip('the CPU kernels cannot be built here')
    build_folder = osp.dirname(built.__file__)
    cache = tmp_path / 'cache'
    shutil.copytree(build_folder, cache / osp.basename(build_folder))
    chmod_tree(cache, 0o555, 0o444)
    try:
        result = load_in_child(str(cache))
    finally:
        chmod_tree(cache, 0o755, 0o644)
    library = osp.join(cache, osp.basename(build_folder), osp.basename(built.__file__))
    assert result == {'library': library, 'warnings': []}
