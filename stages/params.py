"""Load and validate params.yaml: flat top-level keys, one schema, one-line errors.

Every stage calls ``load(keys)`` with exactly the keys dvc.yaml lists for it, before it touches
anything. A bad value stops the stage with a ``ParamError`` that names the key, the value and
what is allowed; a key that no stage knows (a typo such as ``latnet_dim``) is an error too,
because DVC would otherwise run an experiment that silently ignores it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.runtime import StageError

PARAMS_FILE = Path("params.yaml")


class ParamError(StageError):
    """A value in params.yaml is missing, of the wrong type, out of range or not a known choice."""


@dataclass(frozen=True)
class Param:
    allowed: str  # what is allowed, in words, for the error message
    check: Callable[[Any], Any]  # returns the (normalised) value or raises ValueError


def _integer(minimum: int, maximum: int | None = None) -> Param:
    bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError
        return value

    return Param(f"an integer {bound}", check)


def _positive_float() -> Param:
    def check(value):
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError
        return float(value)

    return Param("a finite number > 0", check)


def _choice(*choices: str) -> Param:
    def check(value):
        if value not in choices:
            raise ValueError
        return value

    return Param("one of " + ", ".join(choices), check)


def _layer_widths() -> Param:
    def check(value):
        if not isinstance(value, list) or not value:
            raise ValueError
        for units in value:
            if isinstance(units, bool) or not isinstance(units, int) or units < 1:
                raise ValueError
        return list(value)

    return Param("a non-empty list of integers >= 1, e.g. [512, 256]", check)


ACTIVATIONS = ("relu", "tanh", "softplus", "elu", "gelu", "silu")
BINARIZATIONS = ("static", "dynamic", "threshold", "larochelle")

SCHEMA: dict[str, Param] = {
    # prepare (and fetch_larochelle, which fetches the fixed files only for "larochelle")
    "binarization": _choice(*BINARIZATIONS),
    "binarization_seed": _integer(0, 2**32 - 1),
    # train: the model
    "latent_dim": _integer(1),
    "hidden_units": _layer_widths(),
    "activation": _choice(*ACTIVATIONS),
    # train: the optimisation
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "learning_rate": _positive_float(),
    "train_samples": _integer(1),
    "patience": _integer(1),
    # train, evaluate and figures: the random draws
    "seed": _integer(0, 2**31 - 1),
    # evaluate
    "eval_samples": _integer(1),
    "valid_eval_samples": _integer(1),
    # figures
    "manifold_grid": _integer(2, 60),
}


def load(keys: list[str], path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml and return the validated values of ``keys`` (and only those)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParamError(f"{path} not found (run the stage from the repository root)") from None
    except yaml.YAMLError as e:
        raise ParamError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise ParamError(f"{path} must be a mapping of top-level keys, got {type(raw).__name__}")

    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), SCHEMA, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ParamError(f"{path}: unknown key {key!r}{hint}; known keys: {', '.join(SCHEMA)}")

    values = {}
    for key in keys:
        param = SCHEMA[key]
        if key not in raw:
            raise ParamError(f"{path}: {key} is missing; expected {param.allowed}")
        try:
            values[key] = param.check(raw[key])
        except (ValueError, TypeError):
            raise not_allowed(key, raw[key], param.allowed, path) from None
    return values


def not_allowed(key: str, value: Any, allowed: str, path: Path = PARAMS_FILE) -> ParamError:
    """The one-line error for a value of ``key`` that is not allowed (also for checks that need
    the data, such as a batch larger than the training set)."""
    return ParamError(f"{path}: {key} = {value!r} is not allowed; expected {allowed}")
