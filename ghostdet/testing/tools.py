"""The repository's ``tools/`` scripts in tests: in-process, to call their functions, or as a user runs
them, to check exit codes and what they print."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
from types import ModuleType
from typing import Dict, Optional

from .detectors import REPO


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` imported as a fresh module (tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f'ghostdet_tool_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(name: str, *args: object, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run ``tools/<name>`` (``train`` runs ``train.py`` with this Python, ``dist_train.sh`` runs with
    bash; an absolute path runs that script instead) from the repository root with ``args``, the
    environment updated with ``env``; stdout and stderr are captured as text."""
    script = name if osp.isabs(name) else osp.join('tools', name if osp.splitext(name)[1] else f'{name}.py')
    command = ['bash', script] if script.endswith('.sh') else [sys.executable, script]
    return subprocess.run([*command, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
