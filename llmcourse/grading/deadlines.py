"""When a submission was handed in, when it was due, and what lateness costs.

A course gives each assignment a due date and the class a late policy in its
``nbgrader_config.py`` (``nbconfig.course_deadline``); each submission carries the time it
was handed in (``intake.read_submission_time``: nbgrader's ``timestamp.txt``, else the
notebook file's time). A late policy never changes a cell's points: it is a penalty beside
them, subtracted from the total (``grades.csv``'s ``final_score``), as nbgrader's gradebook
keeps ``late_submission_penalty`` beside the scores.

Plain functions of their arguments: nothing here reads a submission or the clock.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

SECONDS_PER_DAY = 24 * 3600
TIME_EXAMPLE = "'2026-12-10 23:59 UTC', '2026-12-10 23:59 Europe/Berlin' or ISO 8601 '2026-12-10T23:59:00+01:00'"
# A date and a time first (dateutil would fill a missing date from today); then nbgrader's
# forms: "<date> <time> <zone>", ISO 8601 with an offset or Z, or no zone at all (UTC).
TIME_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")
# A zone after the time is looked up in the system's zone files: a plain name only, never a
# path (dateutil would open one) nor a number (parse_utc would read "+0100" as 100 seconds).
ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,30}(/[A-Za-z][A-Za-z0-9_+-]{0,30}){0,2}")
POLICY_FORMS = ("'none' (late is shown, nothing taken off), 'zero' (a late submission scores 0) or "
                "'penalty_per_day:P' (P percent of the maximum score per started day late, at most the score)")


def parse_time(text: str) -> datetime:
    """The moment ``text`` names, as an aware UTC datetime, read by nbgrader's own parser
    (``nbgrader.utils.parse_utc``, which its ``autograde`` reads ``timestamp.txt`` with), so
    both read a timestamp alike: ``2026-11-30 14:05:11.123456 UTC`` (what nbgrader's
    exchange writes), ``2026-11-30 15:05 Europe/Berlin``, ISO 8601 with an offset; without a
    zone, UTC. Anything else, an unknown zone included, is a ``ValueError`` saying what is
    expected."""
    import dateutil.tz
    from nbgrader.utils import parse_utc

    text = text.strip()
    expected = f"expected a date and time such as {TIME_EXAMPLE}"
    if not TIME_SHAPE.match(text):
        raise ValueError(expected)
    parts = text.split(" ")
    if len(parts) == 3 and not (ZONE_NAME.fullmatch(parts[2]) and dateutil.tz.gettz(parts[2]) is not None):
        raise ValueError(f"unknown time zone {parts[2][:40]!r}; {expected}")
    try:
        moment = parse_utc(text)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"{str(e)[:100]}; {expected}") from None
    return moment.replace(tzinfo=timezone.utc)  # parse_utc returns naive UTC


@dataclass(frozen=True)
class LatePolicy:
    """What a late submission costs: ``none``, ``zero`` (nbgrader's two methods) or
    ``penalty_per_day`` (``percent`` of the assignment's maximum per started day late)."""

    name: str = "none"
    percent: float = 0.0

    def __str__(self) -> str:
        """The policy as the course's configuration writes it."""
        return f"{self.name}:{self.percent:g}" if self.name == "penalty_per_day" else self.name

    def penalty(self, seconds_late: float, score: float, max_score: float) -> float:
        """The points taken off a total of ``score`` (out of ``max_score``) handed in
        ``seconds_late`` after the due date: never more than the score, none when on time."""
        if seconds_late <= 0 or self.name == "none":
            return 0.0
        if self.name == "zero":
            return score
        days = math.ceil(seconds_late / SECONDS_PER_DAY)  # a minute into a day counts the day
        return min(score, days * self.percent * max_score / 100)


def parse_late_policy(text: str) -> LatePolicy:
    """The ``LatePolicy`` the course's configuration (or ``--late-policy``) writes as ``text``;
    a ``ValueError`` names the forms expected."""
    name, _, percent = str(text).strip().partition(":")
    if name in ("none", "zero") and not percent:
        return LatePolicy(name)
    if name == "penalty_per_day":
        try:
            value = float(percent)
        except ValueError:
            value = math.nan
        if 0 < value <= 100:
            return LatePolicy(name, value)
    raise ValueError(f"expected {POLICY_FORMS}")


@dataclass(frozen=True)
class Lateness:
    """One submission against its due date: ``late`` and ``hours_late`` are None when there
    is no due date or no time is known (no submission); ``penalty`` is in points."""

    late: bool | None = None
    hours_late: float | None = None
    penalty: float = 0.0


@dataclass(frozen=True)
class Deadline:
    """An assignment's due date (None: none) and the course's late policy."""

    due: datetime | None = None
    policy: LatePolicy = LatePolicy()

    def lateness(self, submitted_at: str, score: float, max_score: float) -> Lateness:
        """How late a submission handed in at ``submitted_at`` (ISO 8601, as ``Report``
        keeps it; "" when unknown) is, and the penalty on its total ``score``. The time it
        was handed in counts, not when it is graded."""
        if self.due is None or not submitted_at:
            return Lateness()
        seconds = (datetime.fromisoformat(submitted_at) - self.due).total_seconds()
        return Lateness(seconds > 0, max(seconds, 0.0) / 3600, self.policy.penalty(seconds, score, max_score))
