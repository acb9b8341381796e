"""The benchmark's operation counts (the benchmark itself prints figures and asserts nothing)."""

from benchmarks.flops import flops_per_example


def test_flops_count():
    counts = flops_per_example(2, [256, 256])
    assert counts["decoder"] == 2 * (2 * 256 + 256 * 256 + 256 * 784)
    assert counts["forward"] == counts["encoder"] + counts["decoder"]
