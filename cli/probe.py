"""``vqspeech probe``: how much of what was said the codes keep (phone accuracy, issue 17)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from vqspeech.content_probe import corpus_phone_probe
from vqspeech_cli.errors import boundary, stderr
from vqspeech_cli.options import Device, Model


def probe_command(
    model: Model,
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="A corpus from vqspeech data synth: its eSpeak speakers have phone labels (phones/).",
        ),
    ],
    test_speakers: Annotated[
        list[str] | None,
        typer.Option(
            "--test-speaker",
            help="A speaker whose tokens score the probe (repeatable). Default: every second speaker.",
            metavar="NAME",
        ),
    ] = None,
    utterances: Annotated[
        int, typer.Option("--utterances", min=1, help="Utterances per speaker (the first by id).")
    ] = 20,
    context: Annotated[
        int, typer.Option("--context", min=0, help="Neighbouring codes on each side the probe sees.")
    ] = 0,
    skip_silence: Annotated[
        bool, typer.Option("--skip-silence", help="Leave pause and silence tokens out.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON on stdout.")] = False,
    device: Device = "auto",
) -> None:
    """Phone accuracy of a linear probe from the codes, on speakers it was not fitted on, and chance.

    Every token (64 samples) gets the eSpeak phone at its centre; a logistic regression from
    one-hot codes to phones is fitted on the training speakers' tokens and scored on the test
    speakers'. Chance: always answering the most common training phone. The paper reports
    49.3 % against 7.2 % chance.
    """
    with boundary():
        scores = corpus_phone_probe(
            model,
            data,
            test_speakers=test_speakers,
            utterances_per_speaker=utterances,
            context=context,
            skip_silence=skip_silence,
            device=device,
        )
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(scores), indent=2))
        return
    stderr.print(
        f"phone accuracy {100 * scores.accuracy:.1f} % (chance {100 * scores.chance:.1f} %) on "
        f"{scores.n_frames} tokens of {', '.join(scores.test_speakers)}; {scores.n_phones} phones, "
        f"fitted on {scores.n_train_frames} tokens of {', '.join(scores.train_speakers)}"
    )
