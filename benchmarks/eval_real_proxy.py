"""The real-speech proxy (issue 17): a model's scores on voices of an engine it never trained on,
and on the one real CMU ARCTIC utterance that the ``pysptk`` package ships.

    .venv/bin/python benchmarks/eval_real_proxy.py RUN/last.pt [HELD_OUT_CORPUS ...] \
        [--max-files 40] [--decoder spectrogram] [--prior PRIOR] [--audio-dir DIR]

HELD_OUT_CORPUS: a folder of recordings, e.g. a Festival corpus for a model trained without
Festival voices::

    vqspeech data synth /tmp/q-fest --voices broad --engine festival --speakers 10 --utterances 4 --seed 9

The ARCTIC utterance (``arctic_a0007.wav``, 4 s, a US male) is a check, never training data;
its set is skipped with a note where pysptk is not installed (``pip install pysptk``: it builds
from source, about a minute, so no extra lists it). Each set goes through
:func:`vqspeech.evaluation.transcode.score_recordings` (what ``vqspeech score`` runs): one table
row per set, its copy-synthesis ceiling where the decoder has one, and a final JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from vqspeech.audio import is_audio_file
from vqspeech.codec import Codec
from vqspeech.evaluation.measures import ReconstructionScores
from vqspeech.evaluation.transcode import ScoreReport, score_recordings
from vqspeech.prior_checkpoint import load_prior


def arctic_utterance() -> Path | None:
    """The CMU ARCTIC utterance in pysptk's package data, found without importing pysptk.util
    (which imports pkg_resources, gone from setuptools 81); None where pysptk is not installed."""
    spec = importlib.util.find_spec("pysptk")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "example_audio_data" / "arctic_a0007.wav"
        if path.is_file():
            return path
    return None


def recordings(folder: Path) -> list[Path]:
    """Audio files under ``folder``, sorted (``folder`` itself if it is one)."""
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_audio_file(p))


def _f(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def row(name: str, n: int, seconds: float, s: ReconstructionScores, kbps: float | None) -> str:
    dnsmos = f"{_f(s.dnsmos_ovrl_reference, 5)}→{_f(s.dnsmos_ovrl, 4)}"
    return (
        f"{name:<34}{n:>4}{seconds:>7.1f}{s.stoi:>7.3f}{_f(s.pesq, 6)}{s.log_mel_distance:>9.2f}"
        f"{s.mel_cepstral_distortion:>7.2f}{dnsmos:>12}{_f(s.speaker_similarity, 6)}{_f(kbps, 8)}"
    )


def summary(report: ScoreReport) -> dict[str, Any]:
    data = report.to_dict()
    return {k: data[k] for k in ("n_files", "seconds", "raw_bitrate", "coded_bitrate", "mean", "ceiling")} | {
        "failed": len(report.failed),
        "voice_policy": report.voice_policy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("corpora", nargs="*", type=Path, help="held-out-engine corpus folders")
    parser.add_argument("--max-files", type=int, default=40, help="per corpus")
    parser.add_argument("--decoder", default=None)
    parser.add_argument("--prior", type=Path, default=None)
    parser.add_argument("--audio-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    codec = Codec.load(args.checkpoint, args.device)
    prior = load_prior(args.prior) if args.prior is not None else None
    sets: list[tuple[str, list[Path]]] = [(str(c), recordings(c)) for c in args.corpora]
    arctic = arctic_utterance()
    if arctic is None:
        print("note: pysptk is not installed, so the ARCTIC utterance is skipped", file=sys.stderr)
    else:
        sets.append(("CMU ARCTIC a0007 (pysptk)", [arctic]))
    if not sets:
        parser.error("nothing to score: give a corpus folder, or pip install pysptk")
    print(
        f"{'set':<34}{'n':>4}{'s':>7}{'STOI':>7}{'PESQ':>6}{'log-mel':>9}{'MCD':>7}"
        f"{'DNSMOS o→d':>12}{'spk':>6}{'kbit/s':>8}"
    )
    results: dict[str, Any] = {"checkpoint": args.checkpoint, "sets": {}}
    for i, (name, files) in enumerate(sets):
        audio_dir = None if args.audio_dir is None else args.audio_dir / f"set{i}"
        report = score_recordings(
            codec,
            files,
            decoder=args.decoder,
            prior=prior,
            max_files=args.max_files,
            audio_dir=audio_dir,
            checkpoint=args.checkpoint,
        )
        for failure in report.failed:
            print(f"error: {failure.error}", file=sys.stderr)
        mean, ceiling = report.mean, report.ceiling
        bitrate = report.coded_bitrate if report.coded_bitrate is not None else report.raw_bitrate
        label = Path(name).name if Path(name).exists() else name
        if mean is not None:
            print(row(label[:34], mean.n, report.seconds, mean, None if bitrate is None else bitrate / 1000))
        if ceiling is not None:
            print(row("  ceiling (GL, true magnitudes)", ceiling.n, report.seconds, ceiling, None))
        results["sets"][name] = summary(report)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
