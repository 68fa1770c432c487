"""Fixtures shared by the tests (helpers: ``ghostdet.testing``)."""
from pathlib import Path
from typing import Callable

import pytest
import torch

from ghostdet.datasets import make_shapes_dataset
from ghostdet.testing import write_detector_files


def pytest_collection_modifyitems(items) -> None:
    """Files with slow tests first: ``make test`` runs two workers (pytest-xdist, one file per worker at a
    time), and a long file started last would leave one core idle at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker('slow')}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's tests stay together


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='module')
def single_thread():
    """Models this small run faster on one thread; on shared cores, more threads are much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def shapes_data_root(tmp_path_factory) -> Callable[..., str]:
    """``make(num_train, num_val, image_size, seed)`` -> the data root of that generated shapes dataset,
    written once a session (the same arguments give the same files)."""

    def make(num_train: int = 4, num_val: int = 2, image_size: int = 128, seed: int = 0) -> str:
        out = tmp_path_factory.getbasetemp() / f'shapes_{num_train}_{num_val}_{image_size}_{seed}'
        return make_shapes_dataset(str(out), num_train=num_train, num_val=num_val, image_size=image_size,
                                   seed=seed)['data_root']

    return make


@pytest.fixture(scope='module')
def data_root(shapes_data_root) -> str:
    """4 training images of 128 px: the data of ``ghostdet.testing.detector_config``'s few-step runs."""
    return shapes_data_root()


@pytest.fixture(scope='module', params=['retinanet', 'fcos'])
def detector_files(request, tmp_path_factory) -> dict:
    """Each kind's training and deploy config + checkpoint (``write_detector_files``), its ``kind`` and
    the folder they are in (``out``)."""
    out: Path = tmp_path_factory.mktemp(request.param)
    return dict(write_detector_files(request.param, str(out)), kind=request.param, out=out)
