"""Progress reporting for long steps (key generation, evaluation, calibration)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["ProgressFn", "stderr_progress", "no_progress"]

# progress(stage, done, total)
ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    pass


def stderr_progress(min_interval: float = 0.2) -> ProgressFn:
    """A callback drawing ``stage [done/total]`` on stderr (one line, redrawn on a terminal)."""
    last = {"t": 0.0, "stage": ""}
    tty = sys.stderr.isatty()

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if not tty:
            if finished:
                print(f"  {stage}: done ({total})", file=sys.stderr)
            return
        if finished or now - last["t"] >= min_interval or stage != last["stage"]:
            last["t"], last["stage"] = now, stage
            width = 24
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if finished else ""
            print(f"\r  {stage:<12} [{bar}] {done}/{total}", end=end, file=sys.stderr,
                  flush=True)

    return report
