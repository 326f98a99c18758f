"""Every chapter's checks, looked up by id (``"ch3.causal_mask"``).

The chapters' modules register their checks when imported; this module imports them
all, so it is the one place that knows which chapters exist. ``checks.py`` defines what
a check is and imports no chapter.
"""
from __future__ import annotations

from . import checks_ch1, checks_ch2, checks_ch3, checks_ch4, checks_ch5  # noqa: F401 (each registers its checks)
from .checks import REGISTRY, Check


def get_check(check_id: str) -> Check:
    try:
        return REGISTRY[check_id]
    except KeyError:
        raise KeyError(f"unknown check {check_id!r}; known: {', '.join(sorted(REGISTRY))}") from None


def checks_of_chapter(chapter: str) -> list[Check]:
    """The checks of one chapter (``"ch4"``), in the order they were registered."""
    return [check for check_id, check in REGISTRY.items() if check_id.split(".")[0] == chapter]
