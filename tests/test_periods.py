"""lurm_lite.periods, the one home for time: hand-computed period indices and starts across
a year boundary and a leap day, the K-month window, life, the granularity parser, and a scan
that no other module defines a day constant, a period constant or a granularity parser."""

import re
from pathlib import Path

import numpy as np
import pytest

from lurm_lite import periods
from lurm_lite.periods import (DAY_SECONDS, LIFE, month_index, months_per_period, parse_granularity, period_index,
                               period_start_ts, window_start_ts)

ROOT = Path(__file__).resolve().parents[1]

# Hand-computed unix seconds (UTC midnight unless noted).
T_2015_12_31_2359 = 1_451_606_399  # 2015-12-31 23:59:59
T_2016_01_01 = 1_451_606_400  # 16801 days after 1970-01-01
T_2016_02_01 = 1_454_284_800  # + 31 days
T_2016_02_29 = 1_456_704_000  # + 28 days: the leap day
T_2016_03_01 = 1_456_790_400  # + 1 day
T_2016_03_03 = 1_456_963_200  # + 2 days: day 16863 = 7 * 2409, a 7-day period starts
T_2016_03_07 = 1_457_308_800  # + 4 days
T_2017_01_01 = 1_483_228_800  # 2016-01-01 + 366 days


def test_month_year_and_7d_index_across_a_year_boundary_and_a_leap_day():
    ts = np.array([T_2015_12_31_2359, T_2016_01_01, T_2016_02_29, T_2016_02_29 + DAY_SECONDS - 1, T_2016_03_01,
                   T_2017_01_01 - 1, T_2017_01_01, 0, -1])
    # months since 1970-01: 2015-12 = 45 * 12 + 11 = 551; 2016-01 = 552, 2016-02 = 553, 2016-03 = 554
    assert period_index(ts, "month").tolist() == [551, 552, 553, 553, 554, 563, 564, 0, -1]
    assert period_index(ts, "year").tolist() == [45, 46, 46, 46, 46, 46, 47, 0, -1]
    # 7-day periods since 1970-01-01 (a Thursday): days 16800 and 16801 // 7 = 2400; 2016-02-29 is day 16860 -> 2408;
    # 2016-03-01 is day 16861 -> 2408; 2016-03-03 is day 16863 -> 2409
    assert period_index(ts[:5], "7d").tolist() == [2400, 2400, 2408, 2408, 2408]
    assert period_index(np.array([T_2016_03_03 - 1, T_2016_03_03, T_2016_03_07]), "7d").tolist() == [2408, 2409, 2409]
    assert period_index(np.array([-1]), "7d").tolist() == [-1]  # floor, not truncation


def test_period_starts_are_the_inverse_of_the_index():
    assert period_start_ts("month", np.array([551, 552, 553, 554, 564])).tolist() == [
        T_2016_01_01 - 31 * DAY_SECONDS, T_2016_01_01, T_2016_02_01, T_2016_03_01, T_2017_01_01]
    assert period_start_ts("year", np.array([46, 47])).tolist() == [T_2016_01_01, T_2017_01_01]
    assert period_start_ts("7d", np.array([2408, 2409])).tolist() == [T_2016_03_03 - 7 * DAY_SECONDS, T_2016_03_03]
    assert period_start_ts("month", np.array([-1])).tolist() == [-31 * DAY_SECONDS]  # 1969-12-01
    # February 2016 lasts 29 days: from its start to March's
    feb = period_start_ts("month", np.array([553, 554]))
    assert int(np.diff(feb)[0]) == 29 * DAY_SECONDS
    t = np.arange(-50, 700)
    for g in ("month", "year", "7d", "3d"):
        np.testing.assert_array_equal(period_index(period_start_ts(g, t), g), t)
        np.testing.assert_array_equal(period_index(period_start_ts(g, t + 1) - 1, g), t)


def test_window_of_k_months_before_a_mid_month_end():
    end = T_2016_03_07  # inside March 2016: March is the last month of the window
    assert window_start_ts(end, 1) == T_2016_03_01
    assert window_start_ts(end, 2) == T_2016_02_01
    assert window_start_ts(end, 3) == T_2016_01_01
    assert window_start_ts(end, 4) == T_2016_01_01 - 31 * DAY_SECONDS  # 2015-12-01, across the year boundary
    # an end at a month start: that month is not in the window
    assert window_start_ts(T_2016_03_01, 1) == T_2016_02_01
    assert window_start_ts(T_2017_01_01, 12) == T_2016_01_01
    # vectorised over ends, as encode_users uses it
    np.testing.assert_array_equal(window_start_ts(np.array([T_2016_03_01, end]), 2), [T_2016_01_01, T_2016_02_01])
    assert periods.history_span_months(T_2016_01_01, T_2016_03_07) == 3
    assert periods.history_span_months(T_2016_01_01, T_2016_01_01 + 1) == 1
    assert month_index(T_2016_02_29) == 553 and month_index(np.array([0])).tolist() == [0]


def test_encode_users_window_is_window_start_ts():
    """The Fig. 3 window and encode_users' window are one function: a behaviour inside
    [window_start_ts(end, K), end) counts, one just before it does not."""
    import torch

    from lurm_lite.boi import build_boi
    from lurm_lite.smen import SMEN
    from lurm_lite.user_training import encode_users

    end, start = T_2016_03_07, window_start_ts(T_2016_03_07, 2)  # 2016-02-01
    users = np.array([1, 1, 2, 2])
    ts = np.array([start - 1, start + 5, start - 2, start - 1])  # user 2 has nothing in the window
    boi = build_boi(users, np.zeros(4, np.int32), ts, np.array([0]), 3)
    torch.manual_seed(0)
    model = SMEN(3, hidden=4, anchors=2).eval()
    reps = encode_users(model, boi, np.array([1, 2]), "cpu", last_months=2, history_end_ts=end)
    only_inside = build_boi(users[1:2], np.zeros(1, np.int32), ts[1:2], np.array([0]), 3)
    np.testing.assert_allclose(reps[0], encode_users(model, only_inside, np.array([1]), "cpu", history_end_ts=end)[0])
    assert not reps[1].any()


def test_life_and_period_lengths():
    assert period_index(np.array([-5, 0, 10**9]), LIFE).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="no start in time"):
        period_start_ts(LIFE, np.array([0]))
    assert months_per_period("month") == 1.0 and months_per_period("year") == 12.0
    assert months_per_period("7d") == pytest.approx(7 / 30.4375)
    assert periods.MONTH_SECONDS == 30.4375 * DAY_SECONDS
    assert periods.nests("month", "year") and periods.nests("7d", "28d") and periods.nests("month", LIFE)
    assert not periods.nests("7d", "month") and not periods.nests("7d", "10d") and not periods.nests("year", "year")
    assert periods.coarser_period(np.array([13, 14]), "7d", "28d").tolist() == [3, 3]
    assert periods.month_name(553) == "2016-02" and periods.parse_month("2016-02") == 553


@pytest.mark.parametrize("bad", ["week", "0d", "07d", "d", "7D", "7 d", "-7d", "1.5d", "", "months", 7, None])
def test_bad_granularity_names_the_accepted_forms(bad):
    for call in (lambda: parse_granularity(bad), lambda: period_index(np.array([0]), bad),
                 lambda: period_start_ts(bad, np.array([0]))):
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert all(form in message for form in ("'month'", "'year'", "'<N>d'", "'life'")), message
        assert repr(bad) in message


def test_parse_granularity():
    assert [parse_granularity(g) for g in ("month", "year", LIFE, "1d", "7d", "365d")] == [None, None, None, 1, 7, 365]


# ---------------------------------------------------------------------------------------
# One home: no other module defines time constants or parses granularities
# ---------------------------------------------------------------------------------------

_FORBIDDEN = [
    (re.compile(r"^\s*[A-Z_]*(DAY|WEEK|MONTH|YEAR)_SECONDS\s*[:=]"), "a day/month/year constant"),
    (re.compile(r"^\s*_?LIFE\s*[:=]"), "LIFE"),
    (re.compile(r"\b86_?400\b"), "a 86400 literal (use periods.DAY_SECONDS)"),
    (re.compile(r"\b(30\.4(4|375)|365\.25)\s*\*|[*/]\s*(30\.4(4|375)|365\.25)\b"), "a month/year length literal (use periods.MONTH_SECONDS / YEAR_SECONDS)"),
    (re.compile(r"\)d\$|\\d\+\)?d\b|endswith\(\s*[\"']d[\"']\s*\)"), "a '<N>d' granularity parser"),
    (re.compile(r"datetime64\[M\]"), "calendar-month arithmetic (use periods.month_index / period_start_ts)"),
]


def test_no_module_but_periods_defines_time_constants_or_granularity_parsers():
    offences = []
    for folder in ("lurm_lite", "data_prep", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "lurm_lite" / "periods.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for pattern, what in _FORBIDDEN:
                    if pattern.search(line):
                        offences.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
    assert not offences, "time belongs in lurm_lite/periods.py:\n" + "\n".join(offences)


def test_the_scan_catches_what_it_is_meant_to():
    caught = ["DAY_SECONDS = 86_400", "YEAR_SECONDS = 365 * DAY_SECONDS", "LIFE = 'life'", "x = 3 * 86400",
              "months = days / 30.44", "YEAR = 365.25 * DAY", 'FIX = re.compile(r"^([1-9][0-9]*)d$")', 'if g.endswith("d")',
              "m = ts.astype('datetime64[M]')"]
    for line in caught:
        assert any(pattern.search(line) for pattern, _ in _FORBIDDEN), line
    for line in ("beta_seconds = 5 * DAY_SECONDS", "months of 30.4375 days (:data:`periods.MONTH_SECONDS`)"):
        assert not any(pattern.search(line) for pattern, _ in _FORBIDDEN), line
