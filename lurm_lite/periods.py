"""Time in lurm_lite: granularities, period indices and starts, windows of K months.

The paper divides a user's life T into periods (§2.1.2, eq. 4: one b_t per period t; §2.2:
"T is divided into N parts at a fixed time interval"), at a month and a year scale. This
module is the one place that says what a period is; everything else (BoI, SMEN's views
and encoding windows, serving, Spark, the Fig. 3 ablation) asks it. It imports numpy and
the standard library only, so data_prep can use it without loading the method.

A **granularity** is one of

- ``"month"``: calendar months, period index t = months since 1970-01 (UTC);
- ``"year"``: calendar years, t = years since 1970;
- ``"<N>d"`` (N >= 1, e.g. ``"7d"``): fixed intervals of N days, t = ts // (N * DAY_SECONDS);
- ``"life"`` (:data:`LIFE`): one period per user, t = 0 (b_T of ``boi.whole_life_boi``).

Timestamps are unix seconds (UTC), int64. A window "of K months before an end" is the K
calendar months ending with the month that holds the end's last second: with the end
2018-01-01 00:00 and K = 12, [2017-01-01, 2018-01-01).
"""

from __future__ import annotations

import re

import numpy as np

DAY_SECONDS = 86_400
YEAR_SECONDS = 365.25 * DAY_SECONDS  # mean (Julian) year, for durations in years
MONTH_SECONDS = YEAR_SECONDS / 12  # mean month, 30.4375 days, for durations in months
LIFE = "life"  # granularity of the whole life: one period per user
GRANULARITY_FORMS = "'month', 'year', '<N>d' (N >= 1 days, e.g. '7d') or 'life'"

_FIXED_INTERVAL = re.compile(r"^([1-9][0-9]*)d$")


def parse_granularity(granularity: str) -> int | None:
    """Check ``granularity``; its period length in days for ``<N>d``, None for month/year/life.

    Raises ValueError naming the accepted forms (:data:`GRANULARITY_FORMS`) for anything else.
    """
    if granularity in ("month", "year", LIFE):
        return None
    match = _FIXED_INTERVAL.match(granularity) if isinstance(granularity, str) else None
    if match is None:
        raise ValueError(f"granularity must be {GRANULARITY_FORMS}; got {granularity!r}")
    return int(match.group(1))


def period_days(granularity: str) -> float:
    """Typical length of one period in days: month 30.4375, year 365.25, N for ``<N>d``, life inf."""
    days = parse_granularity(granularity)
    if days is not None:
        return float(days)
    return {"month": MONTH_SECONDS, "year": YEAR_SECONDS, LIFE: np.inf}[granularity] / DAY_SECONDS


def months_per_period(granularity: str) -> float:
    """Length of one period in (mean) months: month 1, year 12, ``<N>d`` N / 30.4375."""
    return period_days(granularity) * DAY_SECONDS / MONTH_SECONDS


def nests(fine: str, coarse: str) -> bool:
    """Whether every period of ``coarse`` is a union of whole periods of ``fine`` (fine != coarse)."""
    fine_days, coarse_days = parse_granularity(fine), parse_granularity(coarse)
    if coarse == LIFE or (fine, coarse) == ("month", "year"):
        return fine != coarse
    return fine_days is not None and coarse_days is not None and fine != coarse and coarse_days % fine_days == 0


def coarser_period(period: np.ndarray, fine: str, coarse: str) -> np.ndarray:
    """The ``coarse`` period (n,) int64 holding each ``fine`` period (n,), for ``nests(fine, coarse)``."""
    if not nests(fine, coarse):
        raise ValueError(f"{fine!r} periods do not nest in {coarse!r} periods")
    period = np.asarray(period, dtype=np.int64)
    if coarse == LIFE:
        return np.zeros_like(period)
    if fine == "month":  # coarse is "year"
        return period // 12
    return period // (parse_granularity(coarse) // parse_granularity(fine))  # "<N>d" -> "<kN>d"


def month_of_day(day: np.ndarray) -> np.ndarray:
    """Calendar month (months since 1970-01) of each day index (days since 1970-01-01): (n,) int64."""
    return np.asarray(day, dtype=np.int64).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def period_index(ts: np.ndarray, granularity: str) -> np.ndarray:
    """Period index t of each timestamp ts (n,) at ``granularity``: (n,) int64.

    Months since 1970-01 (``month``), years since 1970 (``year``), ts // (N days) (``<N>d``),
    0 (``life``); floor division, so a second before 1970 is period -1.
    """
    days = parse_granularity(granularity)
    ts = np.asarray(ts, dtype=np.int64)
    if days is not None:
        return ts // (days * DAY_SECONDS)
    if granularity == LIFE:
        return np.zeros(ts.shape, dtype=np.int64)
    month = month_of_day(ts // DAY_SECONDS)
    return month if granularity == "month" else month // 12


def period_start_ts(granularity: str, period: np.ndarray) -> np.ndarray:
    """Unix seconds at which each period t (n,) of ``granularity`` starts: (n,) int64.

    The inverse of :func:`period_index`: ``period_index(period_start_ts(g, t), g) == t``, and
    period t ends where t + 1 starts. ``life`` has no start in time (ValueError).
    """
    days = parse_granularity(granularity)
    period = np.asarray(period, dtype=np.int64)
    if days is not None:
        return period * (days * DAY_SECONDS)
    if granularity == LIFE:
        raise ValueError("the 'life' granularity has a single period and no start in time")
    unit = "datetime64[M]" if granularity == "month" else "datetime64[Y]"
    return period.astype(unit).astype("datetime64[s]").astype(np.int64)


def month_index(ts: int | np.ndarray) -> int | np.ndarray:
    """Months since 1970-01 of unix time(s) ``ts``: an int for a scalar, else (n,) int64."""
    month = period_index(np.asarray(ts), "month")
    return int(month) if month.ndim == 0 else month


def window_start_ts(end_ts: int | np.ndarray, months: int) -> int | np.ndarray:
    """Start (unix s) of the last ``months`` = K calendar months before ``end_ts`` (exclusive).

    The window of ``encode_users(last_months=K, history_end_ts=end)`` (LURM(2M)) and of
    Fig. 3's length ablation: the K months ending with the month that holds ``end_ts - 1``.
    With the end 2018-01-01 00:00 and K = 12: 2017-01-01; with the end 2017-12-31 (mid
    December) and K = 2: 2017-11-01. An int for a scalar end, else (n,) int64.
    """
    last_month = period_index(np.asarray(end_ts, dtype=np.int64) - 1, "month")  # the month of the last second
    start = period_start_ts("month", last_month + 1 - int(months))
    return int(start) if start.ndim == 0 else start


def history_span_months(start_ts: int, end_ts: int) -> int:
    """Calendar months touched by the window [start_ts, end_ts), at least 1."""
    return max(1, month_index(int(end_ts) - 1) - month_index(int(start_ts)) + 1)


def month_name(month: int) -> str:
    """``'YYYY-MM'`` of a month index (months since 1970-01)."""
    return str(np.datetime64(int(month), "M"))


def parse_month(month: int | str) -> int:
    """A month given as an index (months since 1970-01) or ``'YYYY-MM'`` -> the index."""
    if isinstance(month, str):
        return int(np.datetime64(month, "M").astype(np.int64))
    return int(month)
