"""Shared test set-up.

Tests never touch the network: the course's data files are read from the data
directory, which defaults to ``../shared/data`` beside the repository (where CI
and developers have it) unless ``LLMCOURSE_DATA_DIR`` is already set.
"""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if "LLMCOURSE_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["LLMCOURSE_DATA_DIR"] = str(SHARED_DATA)

# Exactness tests compare fp32 numbers; keep CPU runs on the same thread count everywhere.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def data_dir() -> Path:
    return Path(os.environ["LLMCOURSE_DATA_DIR"])


@pytest.fixture(autouse=True)
def _same_random_inputs_every_run():
    """Each test starts from the same torch seed, whichever worker runs it and after whatever
    tests: a failure on random inputs reproduces. (Graded checks draw their own fresh seeds.)"""
    torch.manual_seed(0)
