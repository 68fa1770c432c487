"""ghostdet: GhostNetV3 (arXiv 2404.11202) for MMDetection 3.x.

The pinned, tested stack is requirements/stack.txt; tools/setup_env.sh installs it (mmcv 2.1.0 with ops
has no wheel for current torch and is built from its sdist).
"""
from setuptools import find_packages, setup

setup(
    name='ghostdet',
    version='0.1.0',
    description='GhostNetV3 backbone, re-parameterization and distillation for MMDetection 3.x',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['ghostdet', 'ghostdet.*']),
    package_data={'ghostdet.ops': ['csrc/*.cpp', 'csrc/*.h']},  # compiled on first use (ops/build.py)
    install_requires=[
        'torch>=2.5',  # torch.serialization.add_safe_globals (2.4) / safe_globals (2.5): safe checkpoint loading
        'torchvision',
        'numpy>=2.0',  # numpy._core (safe_load.py's allow-list)
        'mmengine>=0.10.0,<1.0.0',
        'mmcv>=2.0.0,<2.2.0',  # mmdet 3.3.0 refuses mmcv>=2.2
        'mmdet>=3.3.0,<3.4.0',
        'pycocotools',
    ],
    extras_require={
        'cls': ['mmpretrain>=1.2.0,<2.0.0'],
        'tests': ['pytest', 'timm>=1.0.16', 'onnx', 'onnxruntime', 'matplotlib'],
    },
    license='Apache-2.0',
)
