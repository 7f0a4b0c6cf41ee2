"""``vqspeech data ...``: prepare speech data (a synthetic demo corpus for now)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqspeech.data.synth import Prosody, synthesize_corpus
from vqspeech.data.voices import CATALOGUES, DEFAULT_CATALOGUE, ENGINES
from vqspeech_cli.errors import boundary, stderr
from vqspeech_cli.options import Quiet
from vqspeech_cli.progress import ProgressBar

app = typer.Typer(
    help="Prepare speech data: synthesise a small multi-speaker demo corpus (VCTK 0.92 layout).",
    no_args_is_help=True,
)


@app.callback()
def _data() -> None:
    """Prepare speech data: synthesise a small multi-speaker demo corpus (VCTK 0.92 layout)."""


@app.command()
def synth(
    out_dir: Annotated[
        Path, typer.Argument(help="Folder to write the corpus into (created; must be empty).")
    ],
    speakers: Annotated[
        int, typer.Option("--speakers", min=1, help="Number of speakers (s01, s02, ...).")
    ] = 8,
    utterances: Annotated[int, typer.Option("--utterances", min=1, help="Utterances per speaker.")] = 40,
    seed: Annotated[
        int, typer.Option("--seed", help="Picks sentences, ages and levels; same seed, same files.")
    ] = 0,
    engines: Annotated[
        list[str] | None,
        typer.Option(
            "--engine",
            help=f"Synthesiser to use ({', '.join(ENGINES)}; repeatable). Default: every one installed.",
            metavar="NAME",
        ),
    ] = None,
    catalogue: Annotated[
        str,
        typer.Option(
            "--voices",
            help=f"Voice catalogue ({', '.join(CATALOGUES)}): broad adds every other installed voice "
            "(every eSpeak accent x variant, all flite and Festival voices) after the default ones.",
            metavar="CATALOGUE",
        ),
    ] = DEFAULT_CATALOGUE,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace a corpus already in OUT_DIR (its audio, txt, speaker-info)."
        ),
    ] = False,
    prosody: Annotated[
        bool,
        typer.Option(
            "--prosody",
            help="Vary each eSpeak NG utterance's rate, pitch and intonation range (seeded; off: "
            "every utterance in its speaker's one voice, as the demo corpus).",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Synthesise a multi-speaker demo corpus in the VCTK 0.92 layout (48 kHz FLAC, txt/, speaker-info.txt).

    Voices come from eSpeak NG (pip package espeakng-loader), plus flite and Festival voices when
    those programs are installed; past those (16 to 21 of them), they come back with other
    vocal-tract lengths, so --speakers 48 gives 48 distinct timbres; --voices broad takes
    every installed voice first (about 690 with flite and Festival). eSpeak utterances get
    phone labels in OUT_DIR/phones/. To test on voices of an engine never trained on, make
    two corpora: --engine espeak --engine flite for training, --engine festival for testing.
    Train on it with: vqspeech train demo --data OUT_DIR (or recipes/speech/voices.yaml)
    """
    bar = ProgressBar(quiet, "synth")
    with boundary():
        try:
            result = synthesize_corpus(
                out_dir,
                n_speakers=speakers,
                n_utterances=utterances,
                seed=seed,
                engines=engines or None,
                overwrite=overwrite,
                progress=bar,
                prosody=Prosody() if prosody else None,
                catalogue=catalogue,
            )
        finally:
            bar.close()
    if not quiet:
        voices = ", ".join(f"{s.name}={s.voice.engine}:{s.voice.name}" for s in result.speakers)
        stderr.print(
            f"wrote {result.n_utterances} utterances ({result.seconds / 60:.1f} min) from "
            f"{len(result.speakers)} speakers to {result.root}: {voices}"
        )
