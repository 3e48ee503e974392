"""Progress lines in a log (stderr not a terminal): long stages are heard from while they run."""

from __future__ import annotations

import io

import hec.progress as progress


def test_log_gets_periodic_lines_and_a_final_one(monkeypatch) -> None:
    err = io.StringIO()  # not a terminal
    clock = iter([0.0, 30.0, 61.0, 90.0, 125.0, 130.0])
    monkeypatch.setattr(progress.sys, "stderr", err)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    report = progress.stderr_progress(log_every=60.0)
    for done in range(5):
        report("eval 1/1", done, 5)
    report("eval 1/1", 5, 5)
    lines = err.getvalue().splitlines()
    assert lines == [
        "  eval 1/1: 2/5 after 61 s",
        "  eval 1/1: 4/5 after 125 s",
        "  eval 1/1: done (5) in 130.0 s",
    ]


def test_short_stage_stays_silent_in_a_log(monkeypatch) -> None:
    err = io.StringIO()
    clock = iter([0.0, 0.5, 1.0])
    monkeypatch.setattr(progress.sys, "stderr", err)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    report = progress.stderr_progress()
    for done in range(3):
        report("keygen", done, 2)
    assert err.getvalue() == ""


def test_a_bootstrap_gets_its_own_line_with_the_time_left(monkeypatch) -> None:
    """A bootstrapping program's evaluation names each bootstrap (they take seconds each) and,
    after the first, estimates the time left from the pace between them (not from the work
    before the first, which is unlike them)."""
    from hec.backend_openfhe.execute import _BootstrapPace

    err = io.StringIO()
    clock = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr(progress.sys, "stderr", err)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    report = progress.stderr_progress()
    pace = _BootstrapPace(3)
    report("eval 1/1", 10, 100, pace.note(4.0))
    report("eval 1/1", 40, 100, pace.note(24.0))
    report("eval 1/1", 70, 100, pace.note(54.0))
    assert err.getvalue().splitlines() == [
        "  eval 1/1: bootstrap 1 of 3, 4 s elapsed (10/100 ops)",
        "  eval 1/1: bootstrap 2 of 3, 24 s elapsed, ~40 s left (40/100 ops)",
        "  eval 1/1: bootstrap 3 of 3, 54 s elapsed, ~25 s left (70/100 ops)",
    ]
