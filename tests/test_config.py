"""Recipes: built-ins, YAML overrides, strictness, and the derived numbers other modules rely on."""

from __future__ import annotations

import math

import pytest

from vqspeech.config import BUILTIN_RECIPES, EncoderConfig, WaveNetConfig, load_recipe, recipe_from_dict
from vqspeech.errors import ConfigError
from vqspeech.recipe_io import to_dict


def test_paper_config_matches_the_paper() -> None:
    m = load_recipe("paper").model
    assert m.hop_length == 64  # six stride-2 convs
    assert m.encoder.n_downsample == 6 and m.encoder.kernel_size == 4
    assert m.quantizer.codebook_size == 512
    assert m.quantizer.beta == 0.25
    assert m.sample_rate == 16000
    assert m.token_rate == 250.0
    assert m.bitrate == 250.0 * 9  # ceil(log2 512) = 9 bits per token


@pytest.mark.parametrize("k", [2, 3, 255, 256, 257, 512, 1000, 65536])
def test_bits_per_code_is_ceil_log2(k: int) -> None:
    m = load_recipe("demo", [f"model.quantizer.codebook_size={k}"]).model
    assert m.quantizer.bits_per_code == math.ceil(math.log2(k))


def test_receptive_field_formulas() -> None:
    # strided part: 1 + 3 * (1 + 2 + ... + 32) = 190; residual part at 64x: 2 * 31 * 64
    assert EncoderConfig(res_dilations=()).receptive_field == 190
    assert EncoderConfig().receptive_field == 190 + 2 * 31 * 64
    assert WaveNetConfig(layers_per_cycle=3, dilation_cycles=2).receptive_field == 1 + 2 * (1 + 2 + 4)


@pytest.mark.parametrize("name", sorted(BUILTIN_RECIPES))
def test_recipe_round_trips_through_plain_data(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe_from_dict(to_dict(recipe)) == recipe


def test_yaml_recipe_with_base_and_overrides(tmp_path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("base: demo\nmodel:\n  quantizer:\n    codebook_size: 128\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ntrain:\n  steps: 42\n")
    recipe = load_recipe(child, ["model.encoder.res_dilations=[1, 3]", "train.lr=0.01"])
    assert recipe.name == "child"
    assert recipe.model.quantizer.codebook_size == 128
    assert recipe.train.steps == 42
    assert recipe.train.lr == 0.01
    assert recipe.model.encoder.res_dilations == (1, 3)
    # untouched values come from the demo base
    assert recipe.model.decoder == load_recipe("demo").model.decoder


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.quantiser.dim=3", "unknown key model.quantiser"),
        ("train.steps=many", "expected an integer"),
        ("model.quantizer.ema=1", "expected true/false"),
        ("model.encoder.kernel_size=3", "must be even"),
        ("train.steps", "KEY=VALUE"),
    ],
)
def test_bad_overrides_are_refused_with_a_message(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe("demo", [override])


def test_unknown_recipe_names_the_built_ins(tmp_path) -> None:
    with pytest.raises(ConfigError, match="demo, paper"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_recipe_that_includes_itself_is_refused(tmp_path) -> None:
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_recipe(loop)


def test_config_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, vqspeech.config, vqspeech.errors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_overrides_accept_exponent_floats_without_a_dot() -> None:
    # YAML 1.1 (PyYAML) reads "1e-3" as a string; --set train.lr=1e-3 must still mean 0.001
    assert load_recipe("demo", ["train.lr=1e-3"]).train.lr == 0.001
    assert load_recipe("demo", ["train.lr=2E-4"]).train.lr == 0.0002
    with pytest.raises(ConfigError, match="expected a number"):
        load_recipe("demo", ["train.lr=fast"])
