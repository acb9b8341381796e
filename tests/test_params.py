"""params.yaml validation: good files load, every kind of bad value fails in one clear line."""

import re

import pytest
import yaml

from latent.plumbing import params
from tests.conftest import REPO


def write(path, **overrides):
    """The repository's params.yaml with some values changed, written to ``path``."""
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values.update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def test_repository_params_are_valid():
    values = params.load_keys(list(params.KEYS), REPO / "params.yaml")
    assert values["latent_dim"] == 2 and values["binarization"] == "static"


def test_loads_only_the_keys_asked_for(tmp_path):
    values = params.load_keys(["latent_dim", "seed"], write(tmp_path / "p.yaml", latent_dim=10))
    assert values == {"latent_dim": 10, "seed": 0}


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("latent_dim", 0, "an integer >= 1"),
        ("latent_dim", 2.5, "an integer >= 1"),
        ("latent_dim", "ten", "an integer >= 1"),
        ("latent_dim", True, "an integer >= 1"),
        ("binarization", "fuzzy", "one of static, dynamic, threshold, larochelle"),
        ("learning_rate", -0.1, "a finite number > 0"),
        ("learning_rate", "fast", "a finite number > 0"),
        ("hidden_units", [], "a non-empty list of integers >= 1"),
        ("hidden_units", [64, 0], "a non-empty list of integers >= 1"),
        ("activation", "sigmoidal", "one of relu"),
        ("manifold_grid", 1, "an integer from 2 to 60"),
        ("posterior", "flow", "one of gaussian, iaf"),
        ("flow_steps", -1, "an integer >= 0"),
        ("prior", "mixture", "one of standard, vamp"),
        ("prior_components", 0, "an integer >= 1"),
        ("lr_schedule", "linear", "one of constant, iwae, cosine"),
        ("kl_warmup_epochs", 1.5, "an integer >= 0"),
        ("ema", "yes", "true or false"),
        ("weight_decay", -0.1, "a finite number >= 0"),
        ("gradient_estimator", "vimco", "one of reparameterized, dreg"),
        ("gap_learning_rate", 0, "a finite number > 0"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(tmp_path, key, value, allowed):
    path = write(tmp_path / "p.yaml", **{key: value})
    with pytest.raises(params.ParamError) as error:
        params.load_keys([key], path)
    message = str(error.value)
    assert "\n" not in message
    assert f"{key} = {value!r}" in message
    assert allowed in message


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        write(tmp_path / "q.yaml")
        .read_text()
        .replace("learning_rate: 0.001", "learning_rate: 1e-3")
    )
    assert yaml.safe_load(path.read_text())["learning_rate"] == "1e-3"  # YAML 1.1 says string
    assert params.load_keys(["learning_rate"], path)["learning_rate"] == pytest.approx(1e-3)


def test_missing_key(tmp_path):
    path = write(tmp_path / "p.yaml")
    values = yaml.safe_load(path.read_text())
    del values["epochs"]
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(params.ParamError, match=r"epochs is missing; expected an integer >= 1"):
        params.load_keys(["epochs"], path)


def test_unknown_key_is_a_typo_with_a_suggestion(tmp_path):
    path = write(tmp_path / "p.yaml", latnet_dim=10)
    with pytest.raises(
        params.ParamError, match=re.escape("unknown key 'latnet_dim' (did you mean latent_dim?)")
    ):
        params.load_keys(["seed"], path)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(params.ParamError, match="must be a mapping"):
        params.load_keys(["seed"], path)


def test_a_bad_value_of_another_stage_stops_every_stage(tmp_path):
    path = write(tmp_path / "p.yaml", manifold_grid=100)
    with pytest.raises(params.ParamError, match=r"manifold_grid = 100 is not allowed"):
        params.load_keys(["latent_dim"], path)


def test_dreg_with_a_flow_posterior_is_one_line_naming_both_keys(tmp_path):
    path = write(tmp_path / "p.yaml", posterior="iaf", gradient_estimator="dreg", train_samples=5)
    with pytest.raises(params.ParamError) as error:
        params.load_keys(["posterior"], path)
    message = str(error.value)
    assert "\n" not in message
    assert "gradient_estimator = 'dreg' is not allowed with posterior = 'iaf'" in message
