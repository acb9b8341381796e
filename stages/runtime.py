"""What every stage shares at run time: progress logging and clean one-line failures."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

_START = time.monotonic()


class StageError(Exception):
    """An error the user can fix (params, data, environment): reported in one line, exit 1."""


def log(message: str) -> None:
    """Progress on stderr, with seconds since the stage started, flushed at once."""
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(): a StageError becomes one line on stderr and exit status 1.

    Any other exception is a bug and keeps its traceback.
    """
    try:
        main()
    except StageError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        sys.exit(1)
