"""The benchmark's operation counts (the benchmark itself prints figures and asserts nothing)."""

from benchmarks.flops import flops_per_example


def test_flops_count():
    counts = flops_per_example(2, [256, 256])
    assert counts["decoder"] == 2 * (2 * 256 + 256 * 256 + 256 * 784)
    assert counts["forward"] == counts["encoder"] + counts["decoder"]


def test_gated_units_double_the_matmuls_into_hidden_layers_only():
    plain, gated = flops_per_example(2, [256, 128]), flops_per_example(2, [256, 128], gated=True)
    assert gated["decoder"] - plain["decoder"] == 2 * (2 * 128 + 128 * 256)
    assert gated["encoder"] - plain["encoder"] == 2 * (784 * 256 + 256 * 128)
