"""Each config folder documents its configs as mmpretrain's do: a README.md and a metafile.yml whose
entries name existing files and cover every training config of the folder."""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
FOLDERS = sorted(p.name for p in (ROOT / 'configs').iterdir() if p.is_dir() and p.name != '_base_')


def paths_in(node):
    """Every repository path (``configs/...``) named anywhere in a metafile entry."""
    if isinstance(node, dict):
        return [p for value in node.values() for p in paths_in(value)]
    if isinstance(node, list):
        return [p for value in node for p in paths_in(value)]
    return [node] if isinstance(node, str) and node.startswith('configs/') else []


@pytest.mark.parametrize('folder', FOLDERS)
def test_metafile_names_existing_files_and_every_config(folder):
    directory = ROOT / 'configs' / folder
    assert (directory / 'README.md').is_file()
    meta = yaml.safe_load((directory / 'metafile.yml').read_text())
    missing = [p for p in paths_in(meta) if not (ROOT / p).is_file()]
    assert not missing, f'{folder}/metafile.yml names missing files: {missing}'
    listed = {model['Config'] for model in meta['Models']}
    configs = {str(p.relative_to(ROOT)) for p in directory.rglob('*.py') if 'deploy' not in p.parent.parts}
    assert configs == listed, f'{folder}/metafile.yml: configs not listed {configs - listed}'
