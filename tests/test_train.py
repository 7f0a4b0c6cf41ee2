"""The training loop: loss goes down, resume is exact, signals checkpoint, DDP replicas agree."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import TINY_MODEL, InterruptAt
from typer.testing import CliRunner

from vqspeech.checkpoint import load_checkpoint
from vqspeech.config import BUILTIN_RECIPES, Recipe, load_recipe
from vqspeech.data.batches import validation_batches
from vqspeech.model import VQVAE
from vqspeech.train import evaluate, lr_at, train
from vqspeech_cli.main import app

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "model.decoders=[wavenet]",
    *TINY_MODEL,
    "model.quantizer.dead_code_steps=3",
    "model.speaker_dim=8",
    "data.segment_seconds=0.064",
    "data.valid_utterances_per_speaker=1",
    "data.valid_max_segments=4",
    "train.batch_size=2",
    "train.lr=0.003",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.eval_every=4",
    "train.checkpoint_every=1000",
]


def tiny(*extra: str) -> Recipe:
    return load_recipe("demo", [*TINY, *extra])


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(run: Path) -> list[float]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return [float(v) for _, name, v in rows if name == "train/loss"]


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    cfg = tiny("train.lr=1.0", "train.warmup_steps=10", "train.min_lr_ratio=0.1").train
    lrs = [lr_at(s, cfg, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[100] == pytest.approx(0.1)


def test_a_few_steps_give_finite_decreasing_loss(tmp_path, demo_corpus_dir, demo_corpus) -> None:
    recipe = tiny("train.lr=0.01", "train.batch_size=4", "data.segment_seconds=0.128")
    valid = validation_batches(demo_corpus, recipe, 8)
    torch.manual_seed(recipe.train.seed)  # the loop builds its model from the same seed
    before = evaluate(VQVAE(recipe.model), valid, torch.device("cpu"), 0).valid_loss
    result = train(recipe, demo_corpus_dir, tmp_path / "run", steps=40, device="cpu")
    losses = _losses(tmp_path / "run")
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    after = evaluate(result.model, valid, torch.device("cpu"), 40).valid_loss
    assert after < before - 0.2, (before, after)
    assert result.step == 40 and not result.interrupted
    assert result.last_eval is not None and result.last_eval.values["codes_used"] >= 1
    samples = tmp_path / "run" / "samples" / "step0000040"
    assert {p.name for p in samples.iterdir()} == {"original.wav", "reconstruction.wav", "spectrogram.png"}
    assert (tmp_path / "run" / "tensorboard").is_dir()
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.training["step"] == 40
    assert ckpt.speaker_names == ["s01", "s02", "s03"]
    assert ckpt.recipe.model.n_speakers == 3


#: A tiny speaker encoder (issue 7): its reference crops and table/encoder draws must resume exactly too.
SPEAKER_ENCODER = (
    "model.speaker_encoder.enabled=true",
    "model.speaker_encoder.channels=8",
    "model.speaker_encoder.layers=1",
    "model.speaker_encoder.reference_seconds=0.128",
)


#: Channel augmentation with a clean target (issue 17): batches keyed by (seed, step), the encoder's
#: input swapped in by a hook; a resumed run must see the same degraded crops.
AUGMENT = (
    *SPEAKER_ENCODER,
    "data.augment.enabled=true",
    "data.augment.target=clean",
    "data.augment.noise_prob=1.0",
)


@pytest.mark.parametrize(
    "extra", [(), SPEAKER_ENCODER, AUGMENT], ids=["table", "speaker-encoder", "augmented"]
)
def test_kill_and_resume_continues_with_identical_state(tmp_path, demo_corpus_dir, extra) -> None:
    recipe = tiny(*extra)
    straight = train(recipe, demo_corpus_dir, tmp_path / "a", steps=8, device="cpu")
    killed = train(recipe, demo_corpus_dir, tmp_path / "b", steps=8, device="cpu", callback=InterruptAt(5))
    assert killed.interrupted and killed.step == 5
    assert load_checkpoint(tmp_path / "b" / "last.pt").training["step"] == 5
    resumed = train(recipe, demo_corpus_dir, tmp_path / "b", resume=True, device="cpu")
    assert resumed.step == 8 and not resumed.interrupted
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert _states_equal(a.model_state, b.model_state)  # weights, codebook EMA, usage counters
    assert str(a.training["optimizer"]) == str(b.training["optimizer"])
    assert torch.equal(a.training["rng_torch"], b.training["rng_torch"])


@pytest.mark.parametrize("target", ["clean", "degraded"])
def test_augmentation_reaches_the_encoder(tmp_path, demo_corpus_dir, target) -> None:
    plain = train(tiny(), demo_corpus_dir, tmp_path / "plain", steps=2, device="cpu")
    extra = ("data.augment.enabled=true", f"data.augment.target={target}", "data.augment.noise_prob=1.0")
    augmented = train(tiny(*extra), demo_corpus_dir, tmp_path / target, steps=2, device="cpu")
    a, b = plain.model.state_dict(), augmented.model.state_dict()
    assert not torch.equal(a["encoder.out.weight"], b["encoder.out.weight"])
    assert load_checkpoint(augmented.checkpoint).recipe.data.augment.target == target


def test_a_run_folder_is_never_silently_overwritten(tmp_path, demo_corpus_dir) -> None:
    runner = CliRunner()
    args = [
        "train",
        "demo",
        "--data",
        str(demo_corpus_dir),
        "--out",
        str(tmp_path / "r"),
        "--device",
        "cpu",
        "-q",
    ]
    args += [a for o in TINY for a in ("--set", o)]
    assert runner.invoke(app, [*args, "--steps", "2"]).exit_code == 0
    again = runner.invoke(app, [*args, "--steps", "2"])
    assert again.exit_code == 1 and "--resume" in again.output
    extended = runner.invoke(app, [*args, "--steps", "3", "--resume"])
    assert extended.exit_code == 0, extended.output
    assert load_checkpoint(tmp_path / "r" / "last.pt").training["step"] == 3


def test_sigint_writes_a_checkpoint_and_exits_130(tmp_path, demo_corpus_dir) -> None:
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "vqspeech_cli.main",
        "train",
        "demo",
        "--data",
        str(demo_corpus_dir),
        "--out",
        str(run),
        "--device",
        "cpu",
        "--steps",
        "100000",
        "-q",
    ]
    cmd += [a for o in TINY for a in ("--set", o)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    ckpt = load_checkpoint(run / "last.pt")
    assert 1 <= ckpt.training["step"] < 100000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    result = train(tiny("train.eval_every=1000"), data, out, steps=4, device="cpu")
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_ddp_gloo_two_processes_hold_identical_weights_and_codebooks(tmp_path, demo_corpus) -> None:
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(demo_corpus.root), str(out)), nprocs=2, join=True)
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert _states_equal(r0, r1)
    start = VQVAE(tiny().model).state_dict()
    assert not torch.equal(r0["quantizer.embedding"], start["quantizer.embedding"])  # it did train
    assert load_checkpoint(out / "last.pt").training["step"] == 4


@pytest.mark.parametrize(
    "recipe",
    sorted(BUILTIN_RECIPES)
    + sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes/speech").rglob("*.yaml")),
)
def test_every_recipe_loads_and_builds_a_model(recipe: str) -> None:
    loaded = load_recipe(REPO / recipe if recipe.endswith(".yaml") else recipe)
    with torch.device("meta"):
        model = VQVAE(loaded.model)
    assert model.hop_length == loaded.model.hop_length


@pytest.mark.parametrize(
    "recipe",
    sorted(
        str(p.relative_to(REPO))
        for folder in ("image", "video")
        for p in (REPO / "recipes" / folder).glob("*.yaml")
    ),
)
def test_every_vision_recipe_loads_and_builds_its_models(recipe: str) -> None:
    from vqspeech.vision.config import is_vision_recipe, load_vision_recipe
    from vqspeech.vision.nn import ImageVQVAE

    assert is_vision_recipe(REPO / recipe)
    loaded = load_vision_recipe(REPO / recipe)
    with torch.device("meta"):
        model = ImageVQVAE(loaded.model)
    latents = loaded.model.image_size // 2**loaded.model.n_downsample
    assert model.config.latent_size == latents


def test_init_starts_from_the_checkpoint_weights_with_a_fresh_optimiser(tmp_path, demo_corpus_dir) -> None:
    recipe = tiny()
    first = train(recipe, demo_corpus_dir, tmp_path / "a", steps=4, device="cpu")
    source = load_checkpoint(first.checkpoint)
    # zero steps: the new run's weights are the source's, codebook and k-means state included
    copied = train(recipe, demo_corpus_dir, tmp_path / "b", steps=0, device="cpu", init=first.checkpoint)
    assert _states_equal(source.model_state, copied.model.state_dict())
    fresh = train(recipe, demo_corpus_dir, tmp_path / "c", steps=0, device="cpu")
    assert not _states_equal(source.model_state, fresh.model.state_dict())
    # training on from there: a new run (step counter and optimiser from zero), weights move on
    tuned = train(recipe, demo_corpus_dir, tmp_path / "d", steps=2, device="cpu", init=tmp_path / "a")
    saved = load_checkpoint(tuned.checkpoint)
    assert saved.training["step"] == 2
    assert not _states_equal(source.model_state, saved.model_state)
    assert bool(saved.model_state["quantizer.initialized"])


def test_init_keeps_rows_of_speakers_it_knows_and_refuses_another_model(tmp_path, demo_corpus_dir) -> None:
    first = train(tiny(), demo_corpus_dir, tmp_path / "a", steps=2, device="cpu")
    source = load_checkpoint(first.checkpoint)
    # the same corpus with one speaker renamed: 1 new row, the others copied by name
    renamed = tmp_path / "corpus.tsv"
    lines = []
    for wav in sorted(Path(demo_corpus_dir).rglob("*.flac")) + sorted(Path(demo_corpus_dir).rglob("*.wav")):
        speaker = wav.parent.name
        lines.append(f"{wav}\t{'zz' if speaker == source.speaker_names[0] else speaker}")
    renamed.write_text("\n".join(lines) + "\n")
    tuned = train(tiny(), renamed, tmp_path / "b", steps=0, device="cpu", init=first.checkpoint)
    names = [s["name"] for s in load_checkpoint(tuned.checkpoint).speakers]
    rows = tuned.model.state_dict()["speaker_embedding.weight"]
    old_rows = source.model_state["speaker_embedding.weight"]
    for i, name in enumerate(names):
        if name in source.speaker_names:
            assert torch.equal(rows[i], old_rows[source.speaker_names.index(name)])
        else:
            assert name == "zz" and not any(torch.equal(rows[i], r) for r in old_rows)
    runner = CliRunner()
    args = ["train", "demo", "--data", str(demo_corpus_dir), "--device", "cpu", "-q"]
    args += [a for o in TINY for a in ("--set", o)]
    other = runner.invoke(
        app,
        [
            *args,
            "--out",
            str(tmp_path / "c"),
            "--init",
            str(first.checkpoint),
            "--set",
            "model.quantizer.codebook_size=16",
        ],
    )
    assert other.exit_code != 0 and "quantizer.codebook_size" in other.output
    assert not (tmp_path / "c").exists()  # refused before the run folder is made
    both = runner.invoke(
        app, [*args, "--out", str(tmp_path / "a"), "--init", str(first.checkpoint), "--resume"]
    )
    assert both.exit_code != 0 and "--init" in both.output
