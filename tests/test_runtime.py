"""A stage's console: TensorFlow's start-up lines are gone, the stage's own lines and real
errors stay, and a user error is one line with exit status 1."""

import os
import signal
import subprocess
import sys
import time

import pytest

from latent.plumbing import runtime
from tests.conftest import REPO, make_workspace, write_params


def run_stage(workspace, name):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    command = [sys.executable, "-m", f"stages.{name}"]
    return subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True)


def test_a_stage_prints_only_its_own_lines(tmp_path):
    workspace = make_workspace(tmp_path / "w", train=False)
    result = run_stage(workspace, "prepare")  # runs TensorFlow ops (the Bernoulli draws)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("[") for line in lines), result.stderr
    for marker in ("E0000", "I0000", "W0000", "absl::InitializeLog", "cuInit"):
        assert marker not in result.stderr


def test_a_bad_param_is_one_line_and_exit_status_1(tmp_path):
    workspace = make_workspace(tmp_path / "w", train=False)
    write_params(workspace, binarization="fuzzy")
    result = run_stage(workspace, "prepare")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: params.yaml: binarization = 'fuzzy' is not allowed; expected one of static, "
        "dynamic, threshold, larochelle"
    ]


def test_only_start_up_noise_is_filtered():
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795701443.451373   12213 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1795701443.451781   12213 cudart_stub.cc:31] Could not find cuda drivers",
        "E0000 00:00:1795701454.126615   12259 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags.",
    ]
    kept = [
        "E0000 00:00:1795701454.126615   12259 gpu_device.cc:2020] Out of memory",
        "Traceback (most recent call last):",
        "[    2.7s] binarization static, seed 0",
    ]
    assert all(runtime.STARTUP_NOISE.match(line) for line in noise)
    assert not any(runtime.STARTUP_NOISE.match(line) for line in kept)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT handled as in a terminal (a suite started in the background has it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_a_deferred_block_arrives_when_the_block_has_ended(ctrl_c_raises):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with runtime.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # Python runs the handler between bytecodes: it has had its chance
            done.append("the block")
        done.append("after the block")
    assert done == ["the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_deferred_block_without_ctrl_c_raises_nothing(ctrl_c_raises):
    with runtime.interrupts_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
