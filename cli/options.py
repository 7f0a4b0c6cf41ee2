"""Options shared by several commands, defined once (typer ``Annotated`` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqspeech.decoders import registered

Device = Annotated[
    str,
    typer.Option(
        "--device", help="auto (CUDA when available, else CPU), cpu or cuda.", metavar="auto|cpu|cuda"
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        help="What the decoder network computes in: auto (bfloat16 where the CPU or GPU does it in "
        "hardware: AVX512-BF16/AMX CPUs, recent GPUs; else float32), float32 (exactly as trained) or "
        "bfloat16. In bfloat16 the network runs ~2x faster (a whole long decode ~1.35x) and the audio scores "
        "the same; encoding is always float32.",
        metavar="auto|float32|bfloat16",
    ),
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress output on stderr; errors still print.")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override one recipe value, KEY=VALUE with a YAML value, e.g. --set train.lr=5e-4 (repeatable).",
        metavar="KEY=VALUE",
    ),
]
Model = Annotated[
    Path,
    typer.Option(
        "--model",
        "-m",
        help="Checkpoint to use (a .pt from vqspeech train, or its run folder for its last.pt); loaded "
        "once per command.",
        metavar="CKPT",
    ),
]
DefaultModel = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="Checkpoint to use (a .pt from vqspeech train, or its run folder for its last.pt); loaded "
        "once per command. Default: the model bundled with vqspeech (vqspeech info, with no target, "
        "says what it is and how well it does).",
        metavar="CKPT",
        show_default=False,
    ),
]
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="A folder (created if missing; needed for several inputs; mirrors folder inputs' trees, "
        "file inputs go flat by name), a file (one input), or - for stdout (one input).",
        metavar="DIR|FILE|-",
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace existing outputs (without it, such inputs fail and the rest go on)."
    ),
]
Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Inputs processed in parallel (threads).")]
Seed = Annotated[
    int,
    typer.Option(
        "--seed",
        help="Seed of the WaveNet's sampling noise, per file: same tokens + speaker + seed = same audio.",
    ),
]
Temperature = Annotated[
    float,
    typer.Option(
        "--temperature", min=0.0, help="Sampling temperature; 0 is greedy (argmax), 1 samples the model."
    ),
]
SampleRate = Annotated[
    int | None,
    typer.Option(
        "--sample-rate",
        min=1,
        help="Resample the output audio to this rate in Hz (default: the model's rate).",
        metavar="HZ",
    ),
]
DecoderFamily = Annotated[
    str | None,
    typer.Option(
        "--decoder",
        help="Decoder family: "
        + " or ".join(f"{family.name} ({family.summary})" for family in registered())
        + ", if the model has it (default: the model's first; see vqspeech info CKPT).",
        metavar="|".join(family.name for family in registered()),
    ),
]
Reference = Annotated[
    list[Path] | None,
    typer.Option(
        "--reference",
        "-r",
        help="A recording of the voice to speak in, seen in training or not (repeat for several: "
        "their speaker vectors are averaged). Needs a model with a speaker encoder; not with --speaker.",
        metavar="VOICE.wav",
    ),
]
Prior = Annotated[
    Path | None,
    typer.Option(
        "--prior",
        help="A prior over this model's codes (from vqspeech prior train). encode: "
        "arithmetic-code each token file's codes with it (demo model: 3.8 instead of 9 bits per code; vqt "
        "output only); 'bundled': the prior shipped with the bundled model. decode: "
        "needed for files coded with a prior (the one named in their header); plain files ignore it.",
        metavar="PRIOR",
    ),
]

# The run-folder options of every training command (vqspeech train, vqspeech prior train).
RunOut = Annotated[Path, typer.Option("--out", help="Run folder: last.pt, metrics.csv, tensorboard/.")]
Steps = Annotated[
    int | None,
    typer.Option(
        "--steps", help="Total steps (not additional: --resume --steps N extends a run to N).", min=0
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --out from its last.pt, with every setting saved there (--set is not "
        "used; --steps sets the new total).",
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where the 16 kHz copies of the corpus go (default: ROOT/.vqspeech-cache, or "
        "~/.cache/vqspeech if ROOT is read-only; $VQSPEECH_CACHE_DIR overrides).",
    ),
]
AudioInputs = Annotated[
    list[str],
    typer.Argument(
        help="Audio files (anything soundfile reads, any rate, any channels), folders (searched "
        "recursively for .wav/.flac/.ogg), or - to read paths from stdin, one per line.",
        metavar="INPUT",
    ),
]
