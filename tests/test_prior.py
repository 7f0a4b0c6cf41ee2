"""The prior over speech codes (issue #8): causality, cached sampling, exact integer inference,
training + resume, sampling speech, and the ``prior train`` / ``sample`` commands.

Tiny priors (16 channels, K = 32) and the tiny random-weight VQ-VAE of tests/helpers.py keep
every test to a second or two on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SPEAKERS, InterruptAt, make_checkpoint
from typer.testing import CliRunner

from vqspeech.checkpoint import load_checkpoint
from vqspeech.entropy import PmfSource
from vqspeech.errors import CheckpointError, ConfigError, ModelMismatchError, OutputError
from vqspeech.nn.prior import CodePrior
from vqspeech.nn.prior_int import (
    EXP_STEP,
    LOGIT_STEP_BITS,
    PROB_BITS,
    IntegerCodePrior,
    _exact_matmul,
    exp_table,
)
from vqspeech.prior import (
    CropBatches,
    EncodedUtterance,
    prior_recipe,
    sample_file,
    sample_speech,
    train_prior,
)
from vqspeech.prior_checkpoint import load_prior
from vqspeech.prior_config import UNKNOWN_SPEAKER, PriorConfig
from vqspeech_cli.main import app

TINY = PriorConfig(codebook_size=32, n_speakers=3, channels=16, kernel_size=2, dilations=(1, 2, 4, 8))
TINY_K3 = dataclasses.replace(TINY, kernel_size=3, dilations=(1, 3, 9))

#: Overrides that make `prior train` tiny: the VQ-VAE sets codebook_size and n_speakers.
TINY_RECIPE = [
    "model.channels=16",
    "model.dilations=[1, 2, 4, 8]",
    "segment_tokens=48",
    "train.batch_size=4",
    "train.lr=0.01",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.eval_every=10",
    "train.checkpoint_every=1000",
    "valid_integer_utterances=2",
]


def peaky(config: PriorConfig, seed: int = 0, scale: float = 3.0) -> CodePrior:
    """A random prior with sharp distributions and distinct speakers (like a trained one)."""
    torch.manual_seed(seed)
    model = CodePrior(config)
    with torch.no_grad():
        model.speaker_bias.weight.normal_(0.0, 0.5)
        model.out.weight.mul_(scale)
    return model.eval()


def speakers_of(config: PriorConfig) -> list[int]:
    return [*range(config.n_speakers), UNKNOWN_SPEAKER]


# --------------------------------------------------------------------------------------------
# The float model


@pytest.mark.parametrize("config", [TINY, TINY_K3])
def test_logits_at_t_depend_only_on_earlier_codes(config: PriorConfig) -> None:
    model = peaky(config)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, config.codebook_size, (2, 40), generator=g)
    speaker = torch.tensor([0, UNKNOWN_SPEAKER])
    base = model(codes, speaker)
    for t in (0, 7, 39):
        changed = codes.clone()
        changed[:, t] = (changed[:, t] + 1) % config.codebook_size
        logits = model(changed, speaker)
        assert torch.equal(logits[:, : t + 1], base[:, : t + 1])  # nothing at or before t moves
        if t < 39:
            assert not torch.allclose(logits[:, t + 1], base[:, t + 1])  # the next position sees it
    other = torch.randint(0, config.codebook_size, (2, 40), generator=g)
    assert torch.equal(model(other, speaker)[:, 0], base[:, 0])  # position 0: start vector only


def test_speaker_conditions_the_logits_and_minus_one_is_the_unknown_row() -> None:
    model = peaky(TINY)
    codes = torch.randint(0, 32, (1, 20), generator=torch.Generator().manual_seed(2))
    by_speaker = [model(codes, torch.tensor([s])) for s in speakers_of(TINY)]
    assert not torch.allclose(by_speaker[0], by_speaker[1])
    assert torch.equal(by_speaker[-1], model(codes, torch.tensor([TINY.n_speakers])))


def test_sampling_is_deterministic_for_a_seed() -> None:
    model = peaky(TINY)
    speaker = torch.tensor([1, UNKNOWN_SPEAKER])

    def draw(seed: int) -> torch.Tensor:
        return model.sample(speaker, 50, 1.0, torch.Generator().manual_seed(seed))

    first = draw(3)
    assert first.shape == (2, 50) and first.dtype == torch.int64
    assert torch.equal(first, draw(3))
    assert not torch.equal(first, draw(4))
    assert int(first.min()) >= 0 and int(first.max()) < TINY.codebook_size


@pytest.mark.parametrize("config", [TINY, TINY_K3])
def test_cached_incremental_logits_equal_teacher_forced_logits(config: PriorConfig) -> None:
    model = peaky(config)
    speaker = torch.tensor([2, UNKNOWN_SPEAKER])
    codes = model.sample(speaker, 60, 1.0, torch.Generator().manual_seed(5))
    forward = model(codes, speaker)
    torch.testing.assert_close(model.incremental_logits(codes, speaker), forward, rtol=1e-5, atol=1e-5)
    # greedy sampling picks the argmax of the teacher-forced logits of its own output
    greedy = model.sample(speaker, 30, 0.0)
    assert torch.equal(model(greedy, speaker).argmax(-1), greedy)


# --------------------------------------------------------------------------------------------
# The integer model


def test_exp_table_is_an_exact_integer_exp() -> None:
    table = exp_table()
    assert abs(EXP_STEP - 2**62 * math.exp(-1 / 64)) < 2**12  # float exp is good to ~2**10 here
    assert table[0] == 2**PROB_BITS and table[-1] == 1 and (table >= 1).all()
    assert (np.diff(table) <= 0).all()
    d = np.arange(table.shape[0])
    ideal = 2.0**PROB_BITS * np.exp(-d / 2**LOGIT_STEP_BITS)
    big = ideal > 1000
    np.testing.assert_allclose(table[big], ideal[big], rtol=1e-3)
    assert np.array_equal(table, exp_table())  # built the same way every time


def test_float64_products_of_bounded_integers_are_exact() -> None:
    model = IntegerCodePrior.from_state_dict(TINY, peaky(TINY).state_dict())
    rng = np.random.default_rng(0)
    fan_in, lim = 2 * TINY.channels, model.act_limit
    a = rng.choice([-lim, lim - 1, lim], size=(8, fan_in)).astype(np.int64)  # the worst cases
    b = rng.choice([-(2**15 - 1), 2**15 - 1], size=(fan_in, 5)).astype(np.int64)
    exact = a @ b  # numpy's int64 matmul: no BLAS, no rounding
    assert np.array_equal(_exact_matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64), exact)


@pytest.mark.parametrize("config", [TINY, TINY_K3])
def test_integer_stepper_equals_parallel_weights_exactly(config: PriorConfig) -> None:
    model = peaky(config)
    integer: PmfSource = IntegerCodePrior.from_state_dict(config, model.state_dict())
    rng = np.random.default_rng(0)
    sampled = model.sample(torch.tensor([0]), 70, 1.0, torch.Generator().manual_seed(0))[0].numpy()
    for codes in (rng.integers(0, config.codebook_size, 70), sampled):
        for speaker in speakers_of(config):
            parallel = integer.weights(codes, speaker)
            assert parallel.shape == (70, config.codebook_size) and parallel.dtype == np.int64
            assert (parallel >= 1).all() and (parallel.max(axis=1) == 2**PROB_BITS).all()
            stepper = integer.stepper(speaker)
            rows = []
            for code in codes:
                rows.append(stepper.weights())
                stepper.push(int(code))
            assert np.array_equal(np.stack(rows), parallel)
            # pushing without asking for weights follows the same path
            skipper = integer.stepper(speaker)
            for code in codes[:-1]:
                skipper.push(int(code))
            assert np.array_equal(skipper.weights(), parallel[-1])
            for chunk in (1, 9, 64):  # chunked computation: the same rows
                assert np.array_equal(integer.weights(codes, speaker, chunk), parallel)  # type: ignore[call-arg]


def test_integer_bits_are_within_two_percent_of_the_float_cross_entropy() -> None:
    model = peaky(TINY, scale=4.0)
    integer = IntegerCodePrior.from_state_dict(TINY, model.state_dict())
    speaker = torch.tensor([1])
    codes = model.sample(speaker, 400, 1.0, torch.Generator().manual_seed(9))
    nats = torch.nn.functional.cross_entropy(model(codes, speaker)[0], codes[0]).item()
    float_bits = nats / math.log(2)
    integer_bits = integer.bits(codes[0].numpy(), 1) / 400
    assert float_bits < 0.9 * math.log2(TINY.codebook_size)  # the test is not on a uniform model
    assert abs(integer_bits - float_bits) < 0.02 * float_bits


def test_fingerprint_follows_the_integer_weights() -> None:
    model = peaky(TINY)
    first = IntegerCodePrior.from_state_dict(TINY, model.state_dict())
    again = IntegerCodePrior.from_state_dict(TINY, {k: v.clone() for k, v in model.state_dict().items()})
    assert len(first.fingerprint) == 16 and int(first.fingerprint, 16) >= 0
    assert first.fingerprint == again.fingerprint
    with torch.no_grad():
        model.out.weight[3, 0, 0] += 0.01
    assert IntegerCodePrior.from_state_dict(TINY, model.state_dict()).fingerprint != first.fingerprint


def test_integer_prior_rejects_bad_codes_and_speakers() -> None:
    integer = IntegerCodePrior.from_state_dict(TINY, peaky(TINY).state_dict())
    with pytest.raises(ConfigError, match=r"0\.\.31"):
        integer.weights(np.array([1, 32]), 0)
    with pytest.raises(ConfigError, match="speaker id 3"):
        integer.stepper(3)
    with pytest.raises(ConfigError, match="outside"):
        integer.stepper(0).push(-1)
    assert integer.weights(np.zeros(0, np.int64), 0).shape == (0, 32)


# --------------------------------------------------------------------------------------------
# Training, checkpoints, sampling speech


def test_crops_are_a_pure_function_of_seed_and_step() -> None:
    utts = [EncodedUtterance(f"u{i}", i % 3, np.arange(30 + 40 * i) % 32) for i in range(4)]
    crops = CropBatches(utts, prior_recipe(TINY_RECIPE))
    a, b, c = crops.batch(5), crops.batch(5), crops.batch(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.codes, c.codes)
    many = [crops.batch(s) for s in range(100)]
    starts = [bool(m) for batch in many for m in batch.mask[:, 0]]
    assert any(starts) and not all(starts)  # position 0 counts only where a crop starts its utterance
    assert any(int(s) == UNKNOWN_SPEAKER for batch in many for s in batch.speaker)  # speaker dropout


@pytest.fixture(scope="module")
def vqvae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("vq") / "tiny.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, vqvae: Path, demo_corpus_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("prior") / "run"
    result = train_prior(
        vqvae, demo_corpus_dir, out, recipe=prior_recipe(TINY_RECIPE), steps=30, device="cpu"
    )
    assert result.step == 30 and not result.interrupted
    return result.checkpoint


def _series(run: Path, name: str) -> list[float]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return [float(v) for _, key, v in rows if key == name]


def test_training_lowers_the_loss_and_saves_a_prior(trained: Path, vqvae: Path) -> None:
    losses = _series(trained.parent, "train/bits_per_token")
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    valid = _series(trained.parent, "valid/bits_per_token")
    integer = _series(trained.parent, "valid/integer_bits_per_token")
    assert valid and integer and valid[-1] < math.log2(32)
    prior = load_prior(trained)
    assert prior.model_fingerprint == load_checkpoint(vqvae).fingerprint
    assert prior.config.codebook_size == 32 and prior.config.n_speakers == len(SPEAKERS)
    assert prior.speaker_names == list(SPEAKERS) and prior.speaker_index(None) == UNKNOWN_SPEAKER
    assert prior.speaker_index("s02") == 1 and prior.training["step"] == 30
    assert prior.fingerprint == prior.integer().fingerprint
    with pytest.raises(CheckpointError, match="unknown speaker"):
        prior.speaker_index("nobody")
    with pytest.raises(CheckpointError, match="speech VQ-VAE"):
        load_prior(vqvae)


def test_interrupt_and_resume_continues_exactly(tmp_path: Path, vqvae: Path, demo_corpus_dir: Path) -> None:
    recipe = prior_recipe(TINY_RECIPE)
    straight = train_prior(vqvae, demo_corpus_dir, tmp_path / "a", recipe=recipe, steps=12, device="cpu")
    killed = train_prior(
        vqvae,
        demo_corpus_dir,
        tmp_path / "b",
        recipe=recipe,
        steps=12,
        device="cpu",
        callback=InterruptAt(5),
    )
    assert killed.interrupted and killed.step == 5
    with pytest.raises(ConfigError, match="--resume"):
        train_prior(vqvae, demo_corpus_dir, tmp_path / "b", recipe=recipe, steps=12, device="cpu")
    resumed = train_prior(vqvae, demo_corpus_dir, tmp_path / "b", resume=True, device="cpu")
    assert resumed.step == 12 and not resumed.interrupted
    a, b = load_prior(straight.checkpoint), load_prior(resumed.checkpoint)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert str(a.training["optimizer"]) == str(b.training["optimizer"])
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(ModelMismatchError, match="trained on the codes of model"):
        train_prior(other, demo_corpus_dir, tmp_path / "b", steps=14, resume=True, device="cpu")


def test_sample_speech_has_the_asked_length_and_repeats_for_a_seed(trained: Path, vqvae: Path) -> None:
    first = sample_speech(vqvae, trained, "s02", 0.3, seed=1, device="cpu")
    assert first.sample_rate == 16000 and first.audio.dtype == np.float32
    assert first.audio.shape == (4800,) and np.isfinite(first.audio).all()
    assert first.codes.shape == (math.ceil(4800 / 64),) and first.speaker == "s02"
    again = sample_speech(vqvae, trained, "s02", 0.3, seed=1, device="cpu")
    assert np.array_equal(first.codes, again.codes) and np.array_equal(first.audio, again.audio)
    anyone = sample_speech(vqvae, trained, None, 0.2, seed=2, device="cpu")
    assert anyone.speaker in SPEAKERS and anyone.audio.shape == (3200,)


def test_a_prior_of_another_model_is_refused(trained: Path, tmp_path: Path) -> None:
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(ModelMismatchError, match="trained on the codes of model") as info:
        sample_speech(other, trained, "s01", 0.2, device="cpu")
    assert "\n" not in str(info.value)


def test_sample_file_writes_audio_and_keeps_existing_files(
    trained: Path, vqvae: Path, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "speech.wav"
    sample_file(vqvae, trained, out, "s01", 0.25, device="cpu")
    audio, rate = sf.read(out)
    assert rate == 16000 and audio.shape == (4000,)
    with pytest.raises(OutputError, match="--overwrite"):
        sample_file(vqvae, trained, out, "s01", 0.25, device="cpu")
    with pytest.raises(ConfigError, match="seconds"):
        sample_file(vqvae, trained, tmp_path / "x.wav", "s01", 0.0, device="cpu")


# --------------------------------------------------------------------------------------------
# Command line

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def test_cli_prior_train_and_sample(tmp_path: Path, vqvae: Path, demo_corpus_dir: Path) -> None:
    sets = [arg for item in TINY_RECIPE for arg in ("--set", item)]
    code, err = run(
        "prior", "train", "--model", vqvae, "--data", demo_corpus_dir, "--out", tmp_path / "run",
        "--steps", "3", "--device", "cpu", "--quiet", *sets,
    )  # fmt: skip
    assert code == 0, err
    prior = tmp_path / "run" / "last.pt"
    assert load_prior(prior).training["step"] == 3
    described = runner.invoke(app, ["info", "--json", str(prior)])
    assert described.exit_code == 0, described.output
    info = json.loads(described.output)
    assert info["kind"] == "prior" and info["fingerprint"] == load_prior(prior).fingerprint
    assert info["model_fingerprint"] == load_checkpoint(vqvae).fingerprint and info["training_step"] == 3
    out = tmp_path / "speech.wav"
    base: list[str | Path] = [
        "sample",
        "--model",
        vqvae,
        "--prior",
        prior,
        "--seconds",
        "0.2",
        "--device",
        "cpu",
    ]
    code, err = run(*base, "--speaker", "s03", "--seed", "4", "-o", out)
    assert code == 0, err
    assert sf.info(str(out)).frames == 3200
    code, err = run(*base, "--speaker", "s03", "-o", out)
    assert code == 1 and "--overwrite" in err
    code, err = run(*base, "--speaker", "nobody", "-o", tmp_path / "x.wav")
    assert code == 1 and [line for line in err.splitlines() if line.startswith("error:")]
    code, err = run("prior", "train", "--model", vqvae, "--data", demo_corpus_dir, "--out", tmp_path / "run")
    assert code == 1 and "--resume" in err
