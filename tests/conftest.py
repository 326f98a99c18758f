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
# Debian's Chromium, driven by Playwright without `playwright install` (it cannot download here);
# no background networking: this machine's closed network would refuse it, many times a start.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
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


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the module's page checks (the book, the feedback pages)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_system_deps.sh (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
