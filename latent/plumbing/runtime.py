"""What every stage shares at run time: progress logging, clean one-line failures and a quiet
TensorFlow start-up."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

_START = time.monotonic()


class StageError(Exception):
    """An error the user can fix (params, data, environment): reported in one line, exit 1."""


def log(message: str) -> None:
    """Progress on stderr, with seconds since the stage started, flushed at once."""
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(): a StageError becomes one line on stderr and exit status 1; Ctrl-C
    (KeyboardInterrupt) the line "interrupted" and exit status 130. Either way the stage's
    staged outputs have been removed on the way out (``StagedOutputs``).

    Any other exception is a bug and keeps its traceback.
    """
    try:
        main()
    except StageError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        exit_interrupted()


def exit_interrupted() -> None:
    print("interrupted", file=sys.stderr, flush=True)
    sys.exit(INTERRUPTED_STATUS)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block has ended, then act on it as it would have: for
    the few steps that must finish once begun (renaming a state or outputs into place), so that
    an interrupt never leaves them half done. Only the main thread receives signals in Python;
    elsewhere, or where SIGINT is ignored, the block runs as it is."""
    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(handler):
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
    if received:
        handler(signal.SIGINT, received[0])


# TensorFlow's C++ start-up lines: absl writes them to stderr before logging is configured (so
# TF_CPP_MIN_LOG_LEVEL cannot hide them), e.g. oneDNN and CUDA-driver notes, CPU-feature hints,
# and, on machines without a GPU, "E0000 ... failed call to cuInit". They read as failures.
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} \S+ +\d+ \S+\] "
    r"|E\d{4} \S+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)


def start_tensorflow_quietly() -> None:
    """Import TensorFlow and let it find its devices with file descriptor 2 sent to a temporary
    file, then write back to stderr every line but the start-up noise (anything else, such as a
    real error, still shows). Call before anything imports TensorFlow; later messages obey
    TF_CPP_MIN_LOG_LEVEL (2 unless set: errors only)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        kept = [
            line
            for line in captured.read().decode(errors="replace").splitlines()
            if not STARTUP_NOISE.match(line)
        ]
    if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)
