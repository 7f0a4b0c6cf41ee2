"""``vqspeech eval``: held-out speech scores of a checkpoint (issue 6), or an image model's bits/dim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vqspeech.evaluation import STOI_AIM, TARGET_RATE_AIM, EvalReport
from vqspeech.files import write_text_atomic
from vqspeech.runs import evaluate_run
from vqspeech_cli.errors import boundary, stderr
from vqspeech_cli.options import DecoderFamily, Device, Model, Quiet, Seed

if TYPE_CHECKING:
    from vqspeech.vision.sample import BitsPerDim

STDOUT = "-"


def eval_command(
    model: Model,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="The corpus the model was trained on (VCTK root, speaker folders or a TSV manifest); "
            "its held-out split is scored. Image models: the CIFAR-10 folder (digits need none).",
        ),
    ] = None,
    prior: Annotated[
        Path | None,
        typer.Option(
            "--prior",
            help="Image models: the PixelCNN prior for the bits/dim prior term (default: uniform, log K "
            "per latent).",
            metavar="PRIOR",
        ),
    ] = None,
    json_out: Annotated[
        str | None,
        typer.Option(
            "--json",
            help="Also write the report as JSON to this file (atomically), or - to print only JSON on "
            "stdout instead of the table.",
            metavar="OUT|-",
        ),
    ] = None,
    decoder: DecoderFamily = None,
    max_utterances: Annotated[
        int,
        typer.Option(
            "--max-utterances",
            min=1,
            help="Held-out utterances to reconstruct and convert, taken round-robin over speakers.",
        ),
    ] = 16,
    conversions: Annotated[
        int,
        typer.Option("--conversions", min=0, help="Other speakers each of those utterances is converted to."),
    ] = 2,
    per_speaker: Annotated[
        int,
        typer.Option(
            "--per-speaker",
            min=1,
            help="Real utterances per speaker that train (training split) and test (held-out split) "
            "the speaker classifier and the leakage probe.",
        ),
    ] = 20,
    audio_dir: Annotated[
        Path | None,
        typer.Option(
            "--audio-dir",
            help="Write each utterance's original, reconstruction and conversions as WAVs here "
            "(UTT.orig.wav, UTT.recon.wav, UTT.to_SPEAKER.wav).",
            metavar="DIR",
        ),
    ] = None,
    seed: Seed = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Score a model on the held-out utterances of its corpus (the split training used).

    Reconstructions: STOI, log-mel distance, mel-cepstral distortion, wide-band PESQ (with the
    pesq package). Codes: codes used and dead, perplexity, entropy and raw bitrates.

    Conversions: how often a speaker classifier, trained on the corpus's real training speech,
    hears the target speaker in converted audio, and how often still the source.

    Leakage: how well a linear classifier names the speaker from an utterance's code histogram
    (near chance: the codes carry little speaker identity, as the paper claims).

    Unseen speakers (models with a speaker encoder, corpora with speakers it never trained on,
    e.g. data.valid_speakers): reconstructions voiced by their own speaker vector vs the nearest
    table speaker, and zero-shot conversions toward an unseen voice.

    Image models (docs/vision.md): bits/dim of the held-out images, reconstruction + prior.

    A table on stdout; --json OUT also writes JSON, --json - prints only JSON.
    """
    progress = None if quiet else _progress
    with boundary():
        result = evaluate_run(
            model,
            data,
            prior=prior,
            decoder=decoder,
            max_utterances=max_utterances,
            conversions=conversions,
            per_speaker=per_speaker,
            seed=seed,
            audio_dir=audio_dir,
            progress=progress,
            device=device,
        )
        if not isinstance(result, EvalReport):  # an image model's bits/dim
            _show_bits_per_dim(model, prior, result, json_out)
            return
        if json_out is not None and json_out != STDOUT:
            result.write_json(json_out)
    if json_out == STDOUT:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    Console(highlight=False).print(_table(result))
    if json_out is not None and not quiet:
        stderr.print(f"report: {json_out}", markup=False)


def _show_bits_per_dim(model: Path, prior: Path | None, result: BitsPerDim, json_out: str | None) -> None:
    if json_out is not None:
        text = json.dumps(
            {
                "checkpoint": str(model),
                "prior_checkpoint": None if prior is None else str(prior),
                **result._asdict(),
            },
            indent=2,
        )
        if json_out == STDOUT:
            typer.echo(text)
            return
        write_text_atomic(Path(json_out), text + "\n")
    table = Table(
        title=escape(f"bits/dim of {model} on {result.images} held-out images"), title_justify="left"
    )
    for name in ("term", "bits/dim"):
        table.add_column(name, justify="right" if name == "bits/dim" else "left")
    table.add_row("reconstruction -log2 p(x | z)", f"{result.reconstruction:.3f}")
    table.add_row(f"prior -log2 p(z) ({result.prior_kind})", f"{result.prior:.3f}")
    table.add_row("total", f"{result.total:.3f}")
    Console(highlight=False).print(table)


def _progress(line: str) -> None:
    stderr.print(line, markup=False)


def _table(r: EvalReport) -> Table:
    rec, codes, conv, leak = r.reconstruction, r.codes, r.conversion, r.leakage
    table = Table(
        title=escape(
            f"eval {r.checkpoint} on {r.data}: {r.decoder} decoder, {r.n_utterances} held-out "
            f"utterances ({r.seconds:.1f} s)"
        ),
        title_justify="left",
    )
    for name in ("", "measure", "value", "aim / note"):
        table.add_column(name, justify="right" if name == "value" else "left")
    rows = [
        ("reconstruction", "STOI", f"{rec.stoi:.3f}", _aim(rec.stoi, STOI_AIM, f"≥ {STOI_AIM:.2f}")),
        ("", "log-mel distance", f"{rec.log_mel_distance:.2f} dB", "lower is better"),
        ("", "mel-cepstral distortion", f"{rec.mel_cepstral_distortion:.2f} dB", "lower is better"),
        (
            "",
            "PESQ (wide-band)",
            "n/a" if rec.pesq is None else f"{rec.pesq:.2f}",
            "pip install 'vqspeech[pesq]'" if rec.pesq is None else "1.04..4.64",
        ),
        (
            "",
            "DNSMOS OVRL reconstruction / original",
            "n/a" if rec.dnsmos_ovrl is None else f"{rec.dnsmos_ovrl:.2f} / {rec.dnsmos_ovrl_reference:.2f}",
            "pip install 'vqspeech[dnsmos]'" if rec.dnsmos_ovrl is None else "1..5, no reference",
        ),
        (
            "",
            "speaker similarity (Resemblyzer)",
            "n/a" if rec.speaker_similarity is None else f"{rec.speaker_similarity:.2f}",
            "pip install 'vqspeech[spkr]'" if rec.speaker_similarity is None else "cosine, 1 = same voice",
        ),
        ("codes", "used / dead", f"{codes.codes_used} / {codes.dead_codes}", f"of {codes.codebook_size}"),
        ("", "perplexity", f"{codes.perplexity:.1f}", "2^entropy"),
        ("", "entropy", f"{codes.entropy_bits:.2f} bits", f"{codes.entropy_bitrate:.0f} bits/s"),
        ("", "raw bitrate", f"{codes.raw_bitrate:.0f} bits/s", ""),
        (
            "conversion",
            f"heard as the target ({conv.n} conversions)",
            _pct(conv.target_rate),
            _aim(conv.target_rate, TARGET_RATE_AIM, f"≥ {TARGET_RATE_AIM:.0%}"),
        ),
        ("", "heard as the source", _pct(conv.source_rate), "lower is better"),
        ("", "reconstructions heard as their speaker", _pct(conv.reconstruction_rate), "control"),
        (
            "",
            "classifier accuracy, real held-out",
            _pct(conv.classifier_accuracy),
            f"{conv.n_real} utterances, {conv.n_speakers} speakers",
        ),
        (
            "",
            "pitch moved / gap to target",
            f"{conv.moved_semitones:+.1f} / {conv.wanted_semitones:.1f} st",
            "semitones",
        ),
        (
            "leakage",
            "speaker from code histograms",
            _pct(leak.accuracy),
            f"chance {_pct(leak.chance)}; lower is better",
        ),
        (
            "",
            "speaker information in one code",
            f"{leak.token_bits:.2f} bits",
            f"of {leak.speaker_bits:.2f}; held out; lower is better",
        ),
        (
            "speed",
            "decoding",
            f"{r.decode_x_real_time:.1f}x real time",
            f"evaluation took {r.wall_seconds:.0f} s",
        ),
    ]
    u = r.unseen
    if u is not None:
        rows[-1:-1] = [
            (
                "unseen speakers",
                f"reconstructions heard as their speaker ({u.n})",
                f"{_pct(u.vector_rate)} / {_pct(u.table_rate)}",
                "own speaker vector / nearest table speaker",
            ),
            (
                "",
                "speaker-vector cosine to the real voice",
                f"{u.vector_similarity:.2f} / {u.table_similarity:.2f}",
                "own speaker vector / nearest table speaker",
            ),
            (
                "",
                "pitch off by",
                f"{u.vector_pitch_error:.1f} / {u.table_pitch_error:.1f} st",
                "own speaker vector / nearest table speaker",
            ),
            (
                "",
                f"zero-shot conversions heard as the target ({u.n_conversions})",
                _pct(u.target_rate),
                f"as the source {_pct(u.source_rate)}",
            ),
            (
                "",
                "classifier accuracy, real unseen",
                _pct(u.classifier_accuracy),
                f"{u.n_real} utterances of {', '.join(u.speakers)}",
            ),
        ]
    for row in rows:
        table.add_row(*row)
    return table


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{value:.0%}"  # NaN: nothing was measured


def _aim(value: float, aim: float, text: str) -> str:
    if value != value:
        return text
    return f"[green]{text} ✓[/]" if value >= aim else f"[red]{text} ✗[/]"
