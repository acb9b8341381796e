"""Load and validate params.yaml: flat top-level keys, one pydantic model, one-line errors.

Every stage calls ``load(stage)`` before it touches anything; it returns a frozen object with
exactly the keys dvc.yaml lists for the stage (``pipeline.stage_params``), the one list of what
each stage reads, as attributes: ``config.latent_dim``. Reading a key the stage does not declare
is an AttributeError, not a value DVC would not know to re-run the stage for.
The whole file is validated against ``Params`` (types, bounds, allowed values, and
``extra="forbid"`` so that a typo such as ``latnet_dim`` is an error rather than an experiment
that silently ignores it); the stage gets back only its own keys. Pydantic's error is turned
into the project's one line: the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from latent.plumbing.pipeline import stage_params
from latent.plumbing.runtime import StageError

PARAMS_FILE = Path("params.yaml")


class ParamError(StageError):
    """A value in params.yaml is missing, of the wrong type, out of range or not a known choice."""


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: read it as the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _integer(minimum: int, maximum: int | None = None):
    return Annotated[int, Field(strict=True, ge=minimum, le=maximum)]


def _finite_number(**bound):
    """A finite float with one bound, gt=0 or ge=0, described in words for the error."""
    ((name, limit),) = bound.items()
    words = f"a finite number {'>' if name == 'gt' else '>='} {limit}"
    return Annotated[
        float,
        BeforeValidator(_number),
        Field(strict=True, allow_inf_nan=False, description=words, **bound),
    ]


PositiveNumber = _finite_number(gt=0)
NonNegativeNumber = _finite_number(ge=0)
LayerWidths = Annotated[
    list[Annotated[int, Field(strict=True, ge=1)]],
    Field(min_length=1, description="a non-empty list of integers >= 1, e.g. [512, 256]"),
]
Seed = _integer(0, 2**31 - 1)


def _increasing(values: list[int]) -> list[int]:
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("not increasing")
    return values


StepCounts = Annotated[
    list[Annotated[int, Field(strict=True, ge=1, lt=2**20)]],
    AfterValidator(_increasing),
    Field(
        min_length=1,
        description="a non-empty increasing list of integers from 1 to 1048575, e.g. [10, 100]",
    ),
]


class Params(BaseModel):
    """Every key of params.yaml, grouped by the stage that reads it (dvc.yaml says which)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # prepare (and fetch_larochelle, which fetches the fixed files only for "larochelle")
    binarization: Literal["static", "dynamic", "threshold", "larochelle"]
    binarization_seed: _integer(0, 2**32 - 1)
    # train: the model
    latent_dim: _integer(1)
    hidden_units: LayerWidths
    activation: Literal["relu", "tanh", "softplus", "elu", "gelu", "silu", "gated"]
    posterior: Literal["gaussian", "iaf"]
    flow_steps: _integer(0)
    prior: Literal["standard", "vamp"]
    prior_components: _integer(1)
    # train: the optimisation
    epochs: _integer(1)
    batch_size: _integer(1)
    learning_rate: PositiveNumber
    lr_schedule: Literal["constant", "iwae", "cosine"]
    kl_warmup_epochs: _integer(0)
    ema: Annotated[bool, Field(strict=True)]
    weight_decay: NonNegativeNumber
    train_samples: _integer(1)
    gradient_estimator: Literal["reparameterized", "dreg"]
    patience: _integer(1)
    # train, evaluate, inference_gap and figures: the random draws
    seed: Seed
    # evaluate
    eval_samples: _integer(1)
    valid_eval_samples: _integer(1)
    # inference_gap
    gap_examples: _integer(1)
    gap_steps: _integer(1)
    gap_learning_rate: PositiveNumber
    gap_samples: _integer(1)
    # figures
    manifold_grid: _integer(2, 60)
    # ais
    ais_examples: _integer(1)
    ais_steps: StepCounts
    ais_chains: _integer(1)
    ais_leapfrog_steps: _integer(1)
    ais_schedule: Literal["sigmoid", "linear"]
    ais_initial: Literal["encoder", "prior"]
    bdmc_examples: _integer(0)
    # explorer
    explorer_points: _integer(1, 10000)
    explorer_samples: _integer(2, 10000)

    @model_validator(mode="after")
    def _dreg_needs_a_gaussian_posterior(self) -> Params:
        if self.gradient_estimator == "dreg" and self.posterior != "gaussian":
            raise ValueError(
                "gradient_estimator = 'dreg' is not allowed with posterior = "
                f"{self.posterior!r}; expected posterior = 'gaussian' (DReG evaluates log q(z|x) "
                "with q's parameters held fixed, which a flow gives only by an inverse pass)"
            )
        return self


KEYS = tuple(Params.model_fields)


def allowed(key: str) -> str:
    """What ``key`` may be, in words, read off the model's annotations."""
    field = Params.model_fields[key]
    if field.description:
        return field.description
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(get_args(annotation))
    if annotation is bool:
        return "true or false"
    low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    return f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"


class StageConfig(BaseModel):
    """The params one stage reads, as attributes; ``stage_config`` makes one class per stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@functools.cache
def stage_config(stage: str) -> type[StageConfig]:
    """The frozen model of the params dvc.yaml lists for ``stage``, each typed and bounded as in
    ``Params`` (e.g. ``TrainConfig``); ``stage_config("train")(**values)`` validates ``values``."""
    fields = {
        key: (Params.model_fields[key].annotation, Params.model_fields[key])
        for key in stage_params(stage)
    }
    name = "".join(word.title() for word in stage.split("_")) + "Config"
    return create_model(name, __base__=StageConfig, **fields)


def load(stage: str, path: Path = PARAMS_FILE) -> StageConfig:
    """Read and validate params.yaml; return the params dvc.yaml lists for ``stage`` (and only
    those) as a frozen ``stage_config(stage)``."""
    return stage_config(stage).model_validate(load_keys(stage_params(stage), path))


def load_keys(keys: list[str], path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read and validate params.yaml; return the values of ``keys`` (and only those)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParamError(f"{path} not found (run the stage from the repository root)") from None
    except yaml.YAMLError as e:
        raise ParamError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise ParamError(f"{path} must be a mapping of top-level keys, got {type(raw).__name__}")
    try:
        values = Params.model_validate(raw)
    except ValidationError as e:
        raise _one_line(e, raw, path) from None
    return {key: getattr(values, key) for key in keys}


def _one_line(error: ValidationError, raw: dict, path: Path) -> ParamError:
    """The first problem, as one line: unknown keys first (typos), then fields in file order."""
    problems = error.errors()
    unknown = sorted(str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden")
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        known = ", ".join(KEYS)
        return ParamError(f"{path}: unknown key {unknown[0]!r}{hint}; known keys: {known}")
    for problem in problems:
        if not problem["loc"]:  # a check across keys (model_validator)
            message = str(problem["ctx"]["error"]) if "ctx" in problem else problem["msg"]
            return ParamError(f"{path}: {message}")
        key = str(problem["loc"][0])
        if problem["type"] == "missing":
            return ParamError(f"{path}: {key} is missing; expected {allowed(key)}")
        return not_allowed(key, raw[key], allowed(key), path)
    return ParamError(f"{path}: {' '.join(str(error).split())}")


def not_allowed(key: str, value: Any, allowed: str, path: Path = PARAMS_FILE) -> ParamError:
    """The one-line error for a value of ``key`` that is not allowed (also for checks that need
    the data, such as a batch larger than the training set)."""
    return ParamError(f"{path}: {key} = {value!r} is not allowed; expected {allowed}")
