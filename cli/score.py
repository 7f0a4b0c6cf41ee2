"""``vqspeech score``: any recordings through a model and back, scored against themselves (issue 17)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vqspeech.audio import AUDIO_EXTENSIONS
from vqspeech.bundled import prior_or_bundled
from vqspeech.codec import Codec
from vqspeech.evaluation.measures import ReconstructionScores
from vqspeech.evaluation.transcode import ScoreReport, score_recordings
from vqspeech.prior_checkpoint import load_prior
from vqspeech_cli.errors import boundary, printable, safe, stderr
from vqspeech_cli.io import expand_inputs
from vqspeech_cli.options import DecoderFamily, Device, Model, Precision, Quiet, Seed

STDOUT = "-"


def score_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Recordings (WAV/FLAC/OGG, any rate: 8 kHz telephone files too) or folders searched "
            "recursively; - reads paths from stdin.",
            metavar="FOLDER_OR_FILES...",
        ),
    ],
    model: Model,
    json_out: Annotated[
        str | None,
        typer.Option(
            "--json",
            help="Also write the scores as JSON to this file (atomically), or - to print only JSON "
            "on stdout.",
            metavar="OUT|-",
        ),
    ] = None,
    audio_dir: Annotated[
        Path | None,
        typer.Option(
            "--audio-dir",
            help="Write each file's NNN_NAME.orig.wav, .decoded.wav and (spectrogram decoder) "
            ".ceiling.wav here.",
            metavar="DIR",
        ),
    ] = None,
    max_files: Annotated[
        int | None, typer.Option("--max-files", min=1, help="Score only the first N files (sorted).")
    ] = None,
    speaker: Annotated[
        str | None,
        typer.Option(
            "--speaker",
            "-s",
            help="Decode every file in this table voice (default: the source's own voice: its speaker "
            "vector, or for a model without a speaker encoder the table voice nearest in pitch).",
            metavar="NAME",
        ),
    ] = None,
    prior: Annotated[
        Path | None,
        typer.Option(
            "--prior", help="A prior of this model: also report the entropy-coded bitrate.", metavar="PRIOR"
        ),
    ] = None,
    decoder: DecoderFamily = None,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
) -> None:
    """Encode and decode recordings, and score each decoding against its original.

    STOI, wide-band PESQ (pesq extra), log-mel distance, mel-cepstral distortion, DNSMOS OVRL of
    the original and of the decoding (dnsmos extra), speaker similarity (spkr extra), raw and
    (--prior) coded bitrate. Spectrogram-decoder models also get the copy-synthesis ceiling: the
    model's vocoder from each recording's true magnitudes (Griffin-Lim; the harmonic vocoder at
    the recording's own YIN pitch), with the model's settings.

    A table (one row per file, the mean, the ceiling) on stdout; --json OUT also writes JSON.
    A file that fails is reported and the others are scored; exit code 1 if any failed.
    """
    files, problems = expand_inputs(inputs, AUDIO_EXTENSIONS)
    for problem in problems:
        stderr.print(f"[bold red]error:[/] {safe(problem.label)}: {safe(problem.reason)}")
    with boundary():
        codec = Codec.load(model, device, precision=precision)
        prior = prior_or_bundled(prior, model)
        loaded_prior = load_prior(prior) if prior is not None else None
        report = score_recordings(
            codec,
            [f.path for f in files],
            decoder=decoder,
            speaker=speaker,
            prior=loaded_prior,
            seed=seed,
            max_files=max_files,
            audio_dir=audio_dir,
            progress=None if quiet else _progress,
            checkpoint=model,
        )
        if json_out is not None and json_out != STDOUT:
            report.write_json(json_out)
    for failure in report.failed:
        stderr.print(f"[bold red]error:[/] {safe(failure.error)}")
    if json_out == STDOUT:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        # a pipe or file gets the whole table, not one squeezed to 80 columns
        Console(highlight=False, width=None if sys.stdout.isatty() else 160).print(_table(report))
    if report.failed or problems:
        raise typer.Exit(1)


def _progress(line: str) -> None:
    stderr.print(printable(line), markup=False)


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _row(name: str, seconds: float, voice: str, s: ReconstructionScores, kbps: str) -> tuple[str, ...]:
    return (
        name,
        f"{seconds:.1f}",
        voice,
        _f(s.stoi, 3),
        _f(s.pesq),
        _f(s.log_mel_distance),
        _f(s.mel_cepstral_distortion),
        f"{_f(s.dnsmos_ovrl_reference)}→{_f(s.dnsmos_ovrl)}",
        _f(s.speaker_similarity),
        kbps,
    )


def _table(r: ScoreReport) -> Table:
    table = Table(
        title=escape(
            f"score {r.checkpoint}: {r.decoder} decoder, {len(r.files)} files ({r.seconds:.1f} s); "
            f"voice: {r.voice_policy}"
        ),
        title_justify="left",
    )
    heads = ("file", "s", "voice", "STOI", "PESQ-WB", "log-mel dB", "MCD dB", "DNSMOS orig→dec", "spk sim")
    for head in (*heads, "kbit/s"):
        table.add_column(head, justify="left" if head in ("file", "voice") else "right")
    for f in r.files:
        coded = "" if f.coded_bitrate is None else f" / {f.coded_bitrate / 1000:.2f}"
        scores = ReconstructionScores(1, **vars(f.decoded))
        table.add_row(
            *_row(escape(Path(f.path).name), f.seconds, f.voice, scores, f"{f.raw_bitrate / 1000:.2f}{coded}")
        )
    mean, ceiling = r.mean, r.ceiling
    if mean is not None:
        coded = "" if r.coded_bitrate is None else f" / {r.coded_bitrate / 1000:.2f}"
        raw = r.raw_bitrate or 0.0
        table.add_section()
        table.add_row(*_row(f"mean ({mean.n})", r.seconds, "", mean, f"{raw / 1000:.2f}{coded}"))
    if ceiling is not None:
        table.add_row(*_row("ceiling (its vocoder, true magnitudes)", r.seconds, "", ceiling, ""))
    return table
