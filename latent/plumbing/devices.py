"""Which device trains and evaluates, in words for the metrics, and the distribution strategy.

One GPU: TensorFlow places everything on it. Several GPUs: ``tf.distribute.MirroredStrategy``
(the model code takes the strategy as given and assumes no device). No GPU: the CPU.
"""

from __future__ import annotations

import os
import platform

import tensorflow as tf


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_name(gpu) -> str:
    return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)


def choose_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs when there are several, else the default strategy."""
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def describe(strategy: tf.distribute.Strategy | None = None) -> str:
    """E.g. 'GPU: NVIDIA H100 80GB HBM3' or 'CPU: AMD EPYC 7B13 (2 threads)'."""
    gpus = tf.config.list_physical_devices("GPU")
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if gpus:
        names = sorted({gpu_name(g) for g in gpus})
        count = f"{len(gpus)} x " if len(gpus) > 1 else ""
        return f"GPU: {count}{', '.join(names)}" + (
            f" ({replicas} replicas)" if replicas > 1 else ""
        )
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    suffix = f", {replicas} replicas" if replicas > 1 else ""
    return f"CPU: {cpu_name()} ({threads} threads{suffix})"
