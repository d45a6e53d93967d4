"""The agreement rate's 95 % Wilson interval."""

from __future__ import annotations

import pytest

from gateway.audit import AuditCounts, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (5, 10, 0.2366, 0.7634),  # textbook values
        (10, 10, 0.7225, 1.0),
        (0, 10, 0.0, 0.2775),
        (95, 100, 0.8883, 0.9785),
        (1, 1, 0.2065, 1.0),
    ],
)
def test_known_intervals(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, n)
    assert interval is not None
    assert interval == pytest.approx((low, high), abs=1e-4)


def test_no_trials_no_interval() -> None:
    assert wilson_interval(0, 0) is None


def test_the_interval_holds_the_rate_stays_in_0_1_and_narrows_with_more_audits() -> None:
    widths = []
    for n in (10, 100, 1000, 10_000):
        low, high = wilson_interval(n * 9 // 10, n) or (0.0, 0.0)
        assert 0.0 <= low < 0.9 < high <= 1.0
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)


def test_counts_report_rate_and_interval() -> None:
    counts = AuditCounts(agreed=9, disagreed=1, skipped=3, failed=1)
    stats = counts.as_dict()
    assert stats["audited"] == 10 and stats["skipped"] == 3
    assert stats["agreement_rate"] == pytest.approx(0.9)
    assert (stats["agreement_low"], stats["agreement_high"]) == pytest.approx(
        wilson_interval(9, 10)
    )
    empty = AuditCounts().as_dict()
    assert empty["agreement_rate"] is None and empty["agreement_low"] is None
