"""Where a Monte Carlo poll reads from (its cursor), and when the runtime polls again after a
failure, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.montecarlo.poll import MAX_RANGE, OVERLAP, MonteCarloPoller, Window, next_window
from adapters.runtime.polling import MAX_BACKOFF, backoff

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_the_first_poll_reads_its_lookback_and_each_next_goes_on_from_the_last():
    first = next_window("", NOW, DAY)
    assert first == Window(NOW - DAY, NOW)
    later = NOW + timedelta(minutes=5)
    assert next_window(first.dump(), later, DAY) == Window(NOW - OVERLAP, later)
    # a window read only in part is read on, from where it got to
    part = Window(NOW - timedelta(hours=3), NOW, "YXJyYXljb25uZWN0aW9uOjk5", more=True)
    assert next_window(part.dump(), later, DAY) == part
    # never further back than Monte Carlo answers for, and a cursor it cannot read starts over
    long_ago = Window(NOW - 90 * DAY, NOW - 80 * DAY)
    assert next_window(long_ago.dump(), NOW, DAY).since == NOW - MAX_RANGE
    assert next_window("{not json", NOW, DAY) == first
    assert next_window('{"since": "x"}', NOW, DAY) == first


def test_an_integration_without_an_api_key_is_not_polled():
    poller = MonteCarloPoller()
    assert poller.interval({}, {"webhook_secret": "s"}) is None
    assert poller.interval({}, {"mcd_id": "i"}) is None
    assert poller.interval({"poll_interval_seconds": 60}, {"mcd_id": "i", "mcd_token": "t"}) == 60


def test_after_a_failure_the_next_poll_waits_longer_but_never_past_the_interval():
    assert [backoff(n, 300, 503) for n in (1, 2, 3, 4, 5, 6)] == [10, 20, 40, 80, 160, 300]
    assert backoff(1, 300, 0) == 10  # unreachable: as a 5xx
    assert backoff(1, 300, 401) == 300  # refused: waiting a little mends nothing
    assert backoff(30, 86400, 500) == MAX_BACKOFF
