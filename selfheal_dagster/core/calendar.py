"""The season calendar: when a season opens and ends, its off days, the season of a date.

Production's partitions and checks need it as much as the simulated league does."""

from __future__ import annotations

from datetime import date, timedelta


def season_of(day: date) -> int:
    """The year a season starts in: 2025 for any date of the 2025-26 season or its off-season."""
    return day.year if day.month >= 8 else day.year - 1


def _weekday_between(year: int, month: int, first_day: int, weekday: int) -> date:
    """The first date in ``month`` on or after ``first_day`` that falls on ``weekday``."""
    d = date(year, month, first_day)
    return d + timedelta(days=(weekday - d.weekday()) % 7)


def opening_night(year: int) -> date:
    """The regular season opens on the Tuesday between 20 and 26 October."""
    return _weekday_between(year, 10, 20, 1)


def season_end(year: int) -> date:
    """The regular season ends on the Sunday between 9 and 15 April of the next year."""
    return _weekday_between(year + 1, 4, 9, 6)


def all_star_sunday(year: int) -> date:
    """The All-Star game is on the third Sunday of February."""
    return _weekday_between(year + 1, 2, 15, 6)


def no_game_days(year: int) -> set[date]:
    thanksgiving = _weekday_between(year, 11, 22, 3)
    asg = all_star_sunday(year)
    break_days = {asg + timedelta(days=i) for i in range(-2, 4)}
    return {thanksgiving, date(year, 12, 24)} | break_days


def game_days(year: int) -> list[date]:
    start, end, off = opening_night(year), season_end(year), no_game_days(year)
    return [
        start + timedelta(days=i)
        for i in range((end - start).days + 1)
        if start + timedelta(days=i) not in off
    ]
