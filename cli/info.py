"""``vqspeech info``: what a recipe, checkpoint or token file is (rates, sizes, speakers, header)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vqspeech import bundled
from vqspeech.batch import describe_files
from vqspeech.describe import ModelInfo, RunInfo, TokenInfo
from vqspeech_cli.errors import boundary, safe
from vqspeech_cli.io import Reporter

#: What json.dumps(ensure_ascii=False) leaves raw that a terminal acts on: DEL, the C1 controls
#: (U+009B is a one-character CSI) and the bidirectional overrides; JSON escapes the C0 ones.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def info(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Built-in recipes (paper, demo), recipe YAML files, checkpoints or token files (.vqt). "
            "None: the model bundled with vqspeech.",
            metavar="[TARGET]...",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON instead of tables: one object, or a list for several targets."
        ),
    ] = False,
) -> None:
    """Describe models and token files.

    A recipe or checkpoint: rates, codebook, bitrate, receptive fields, parameter counts.

    A checkpoint adds its speakers, fingerprint and training step. A prior, image or video
    checkpoint: what it is, the model it belongs to, its size, step and settings.

    A token file: its header, the audio's duration, the bitrate and the file's size.

    No target: the model bundled with vqspeech (what encode/decode/convert use without -m), with
    its card: how it was trained, its measured figures, and what it is good and bad at.

    Exit code 1 if any target could not be read (each named on stderr; the others are described).
    """
    with boundary():
        targets = targets or [str(bundled.bundled_model_path())]
    with boundary(), Reporter("info", len(targets), quiet=True) as report:
        outcomes = describe_files(targets)
        for outcome in outcomes:
            report.on_outcome(outcome)
    described = [o.value for o in outcomes if o.ok]
    if as_json:
        data = [d.to_json() for d in described]
        if data:
            text = json.dumps(data[0] if len(targets) == 1 else data, indent=2, ensure_ascii=False)
            typer.echo(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))
    else:
        console = Console(highlight=False)
        for d in described:
            if isinstance(d, TokenInfo):
                console.print(_token_table(d))
            elif isinstance(d, RunInfo):
                console.print(_run_table(d))
            else:
                console.print(_table(d))
    raise typer.Exit(report.exit_code)


def _token_table(r: TokenInfo) -> Table:
    h = r.header
    table = Table(title=safe(f"tokens {r.source}"), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("sample rate", f"{h.sample_rate} Hz"),
        ("hop length", f"{h.hop_length} samples ({h.sample_rate / h.hop_length:g} tokens/s)"),
        ("codebook", f"{h.n_codebooks} x {h.codebook_size} codes ({h.bits} bits each)"),
        ("frames", f"{h.n_frames}"),
        ("duration", f"{r.duration:.3f} s ({h.num_samples} samples)"),
        ("speaker", h.speaker if h.speaker is not None else "(unknown)"),
        ("model fingerprint", h.model_fingerprint),
        ("written by", f"vqspeech {h.vqspeech_version}"),
        ("coding", h.coding),
        (
            "speaker vector",
            f"{r.speaker_vector_bits} bits"
            if r.speaker_vector_bits
            else "(none: decodes as a named speaker)",
        ),
        (
            "bitrate",
            f"{r.bitrate:g} bits/s of codes"
            + (" and speaker vector" if r.speaker_vector_bits else "")
            + f", {r.file_bitrate:.0f} bits/s with the header",
        ),
        ("file size", f"{r.file_size:,} bytes"),
    ]
    rows += [(f"extra: {k}", json.dumps(v)) for k, v in h.extra.items()]
    for key, value in rows:
        table.add_row(safe(key), safe(value))
    return table


def _table(r: ModelInfo) -> Table:
    title = f"{r.kind} {r.source}" + (" (the bundled model)" if r.bundled else "")
    table = Table(title=safe(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("recipe", r.recipe),
        ("sample rate", f"{r.sample_rate} Hz"),
        ("hop length", f"{r.hop_length} samples ({r.token_rate:g} tokens/s)"),
        ("codebook", f"{r.n_codebooks} x {r.codebook_size} codes"),
        ("raw bitrate", f"{r.bitrate:g} bits/s"),
        (
            "encoder receptive field",
            f"{r.encoder_receptive_field} samples ({r.encoder_receptive_field_ms:.1f} ms)",
        ),
        (
            "decoder",
            r.decoder
            + (
                f" (also: {', '.join(d for d in r.decoders if d != r.decoder)})"
                if len(r.decoders) > 1
                else ""
            ),
        ),
        (
            "decoder receptive field",
            f"{r.decoder_receptive_field} samples ({r.decoder_receptive_field_ms:.1f} ms)",
        ),
    ]
    rows += [(f"parameters: {k}", f"{v:,}") for k, v in r.parameters.items()]
    names = [str(s.get("name")) for s in r.speakers]
    rows.append(("speakers", f"{r.n_speakers}" + (f": {', '.join(names)}" if names else "")))
    if r.speaker_encoder:
        rows.append(("speaker encoder", f"yes: {r.speaker_vector_bits}-bit speaker vector per token file"))
    if r.fingerprint:
        rows.append(("fingerprint", r.fingerprint))
    if r.step is not None:
        rows.append(("training step", str(r.step)))
    if r.card is not None:
        rows += _card_rows(r.card)
    for key, value in rows:
        table.add_row(safe(key), safe(value))
    return table


def _card_rows(card: dict[str, Any]) -> list[tuple[str, str]]:
    """The bundled model's card (vqspeech.bundled): what it is, how it was made, how well it does."""
    training = card["training"]
    rows = [
        ("what it is", str(card["summary"])),
        (
            "trained",
            f"{card['recipe']}, {training['steps']:,} steps, {training['minutes']:g} min"
            + "".join(f", {k}: {v}" for k, v in training.items() if k not in ("steps", "minutes")),
        ),
        ("made by", "\n".join(str(c) for c in card["commands"])),
    ]
    rows += [
        (f"measured: {k}", f"{v:g}" if isinstance(v, float) else str(v)) for k, v in card["figures"].items()
    ]
    rows += [("good at", str(card["good_at"])), ("bad at", str(card["bad_at"]))]
    return rows


def _run_table(r: RunInfo) -> Table:
    table = Table(title=safe(f"{r.kind} {r.source}"), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("what", safe(r.description))
    for key, value in r.details.items():
        if key == "config":
            continue
        shown = (
            f"{value:,}"
            if isinstance(value, int)
            else ", ".join(value)
            if isinstance(value, list)
            else str(value)
        )
        table.add_row(safe(key.replace("_", " ")), safe(shown))
    for section, values in r.details.get("config", {}).items():
        if isinstance(values, dict):
            table.add_row(
                safe(section),
                safe(", ".join(f"{k}={v}" for k, v in values.items() if not isinstance(v, dict))),
            )
    return table
