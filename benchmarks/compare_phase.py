"""How much of the spectrogram decoder's sound is phase retrieval: its magnitudes through other vocoders.

    .venv/bin/python benchmarks/compare_phase.py --data DIR [--model CKPT] [--max 10] [--seed 0]

The spectrogram decoder predicts log magnitudes and Griffin-Lim guesses their phase. For each of
the first ``--max`` recordings under ``--data`` (``*.flac`` and ``*.wav``, sorted by path; hidden
folders such as a corpus cache left out), the model (default: the bundled one) encodes it, and its
spectrogram decoder predicts the magnitudes from the codes, voiced by the recording's own speaker
vector where the model has a speaker encoder (as ``vqspeech convert --reference`` would), else by
speaker 0's table row. The frames Griffin-Lim would get (the model's ``n_fft`` and
``griffin_lim_hop``, :meth:`~vqspeech.nn.spectrogram.SpectrogramDecoder.vocoder_frames`) are
turned into audio by:

* ``random + GL12``: fast Griffin-Lim, 12 iterations from random phases (``phase_init: random``);
* ``PGHI + GLk``, k = 0, 4, 8, 12: from phase gradient heap integration of the magnitudes
  (:func:`vqspeech.vocoder.pghi_phase`, ``griffin_lim(init="pghi")``); 0 iterations is the
  inverse STFT of the PGHI phases;
* ``oracle phase``: the recording's own STFT phase on the predicted magnitudes (inverse STFT), what
  a perfect phase retrieval could make of them. Its distance to the PGHI rows is what better phase
  retrieval could still gain; its distance to the original is the magnitudes' own error;
* ``harmonic, YIN pitch``: :func:`vqspeech.vocoder.harmonic_plus_noise` of the predicted
  magnitudes at the recording's own pitch (batched YIN, :func:`vqspeech.nn.pitch.yin`): what a
  perfect pitch head could give; and ``harmonic, head pitch`` at the pitch the model's own head
  predicts from the codes (models with ``vocoder: harmonic``), which is how they decode;

and, as ceilings for phase retrieval alone, the recording's true magnitudes through
``random + GL12`` and ``PGHI + GL12`` (copy synthesis). Each output is scored against its
recording: STOI, PESQ-WB (n/a without ``pesq``), log-mel distance in dB, DNSMOS OVRL (n/a
without ``speechmos``; the originals' own DNSMOS is the first row), and the vocoder's time on one
thread (seconds over all files, and x real time; PGHI rows include the phase integration, the
oracle row only its inverse STFT). Prints a table and a final JSON line. Results: see README,
decoder comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vqspeech.audio import load_audio
from vqspeech.bundled import model_or_bundled
from vqspeech.errors import VQSpeechError
from vqspeech.evaluation import log_mel_distance, pesq_wb, stoi
from vqspeech.evaluation.quality import dnsmos
from vqspeech.inference import Codec
from vqspeech.nn.pitch import decode_pitch
from vqspeech.nn.spectrogram import SpectrogramDecoder
from vqspeech.vocoder import griffin_lim

#: Griffin-Lim iterations of the random-phase rows and the PGHI ceiling (the bundled model's own).
ITERATIONS = 12
#: ``(row, magnitudes, phase init, iterations)`` of the Griffin-Lim rows, in table order.
GRIFFIN_LIM_ROWS: tuple[tuple[str, str, str, int], ...] = (
    (f"predicted, random + GL{ITERATIONS}", "predicted", "random", ITERATIONS),
    *((f"predicted, PGHI + GL{k}", "predicted", "pghi", k) for k in (0, 4, 8, 12)),
)
ORACLE_ROW = "predicted, oracle phase"
HARMONIC_ORACLE_ROW = "predicted, harmonic, YIN pitch"
HARMONIC_ROW = "predicted, harmonic, head pitch"
CEILING_ROWS: tuple[tuple[str, str, str, int], ...] = (
    (f"true, random + GL{ITERATIONS}", "true", "random", ITERATIONS),
    (f"true, PGHI + GL{ITERATIONS}", "true", "pghi", ITERATIONS),
)
ORIGINAL_ROW = "original"


def recordings(data: Path, limit: int) -> list[Path]:
    """The first ``limit`` ``*.flac`` / ``*.wav`` under ``data`` (or ``data`` itself), sorted by path."""
    if data.is_file():
        return [data]
    found = [
        p
        for pattern in ("*.flac", "*.wav")
        for p in data.rglob(pattern)
        # a corpus opened by vqspeech keeps converted copies in ROOT/.vqspeech-cache: not recordings
        if not any(part.startswith(".") for part in p.relative_to(data).parts)
    ]
    return sorted(found)[:limit]


def voice_for(codec: Codec, audio: np.ndarray) -> Tensor:
    """Speaker vector ``[1, S]`` for ``audio``: its own where the model can take one, else speaker 0's."""
    if codec.has_speaker_encoder:
        return torch.from_numpy(codec.speaker_vector([audio]).values)[None]
    return codec.model.speaker_vector(torch.tensor([0]))


def complex_stft(audio: Tensor, n_fft: int, hop_length: int) -> Tensor:
    """Complex ``[B, n_fft // 2 + 1, 1 + T // hop_length]`` of ``[B, T]``: the centred Hann STFT that
    :func:`~vqspeech.vocoder.stft_magnitude` takes the magnitude of (and Griffin-Lim inverts)."""
    window = torch.hann_window(n_fft)
    return torch.stft(
        audio, n_fft, hop_length, n_fft, window=window, center=True, pad_mode="constant", return_complex=True
    )


def score(reference: np.ndarray, wave: Tensor, sample_rate: int) -> dict[str, float | None]:
    """Measures of output ``[1, >= T]`` (clipped to [-1, 1] like a 16-bit file) against ``reference [T]``."""
    degraded = wave[0].clamp(-1.0, 1.0).numpy()[: len(reference)]
    quality = dnsmos(degraded, sample_rate)
    return {
        "stoi": stoi(reference, degraded, sample_rate),
        "pesq": pesq_wb(reference, degraded, sample_rate),
        "log_mel_db": log_mel_distance(reference, degraded, sample_rate),
        "dnsmos_ovrl": quality.ovrl if quality is not None else None,
    }


@torch.no_grad()
def vocode_all(
    decoder: SpectrogramDecoder,
    log_magnitude: Tensor,
    audio: Tensor,
    frames: int,
    seed: int,
    pitch: Tensor | None = None,
) -> dict[str, tuple[Tensor, float]]:
    """Every row's output ``[1, frames * hop_length]`` and vocoder seconds for one recording.

    ``log_magnitude``: the decoder's prediction ``[1, bins, F']`` for ``frames`` latent frames
    (``pitch``: its pitch head's ``[1, 2, F']``, if it has one); ``audio``: the recording
    ``[1, frames * hop_length]`` (zero-padded to the codes' length).
    """
    n_fft, hop = decoder.config.n_fft, decoder.config.griffin_lim_hop
    length = audio.shape[-1]
    spectrum = complex_stft(audio, n_fft, hop)
    predicted = decoder.vocoder_frames(log_magnitude, frames).exp()
    assert predicted.shape == spectrum.shape, (predicted.shape, spectrum.shape)
    magnitudes = {"predicted": predicted, "true": spectrum.abs()}
    out: dict[str, tuple[Tensor, float]] = {}
    for row, which, init, iters in (*GRIFFIN_LIM_ROWS, *CEILING_ROWS):
        started = time.perf_counter()
        wave = griffin_lim(
            magnitudes[which],
            n_fft,
            hop,
            length,
            n_iter=iters,
            generator=torch.Generator().manual_seed(seed),
            init=init,
        )
        out[row] = (wave, time.perf_counter() - started)
    started = time.perf_counter()
    wave = torch.istft(
        torch.polar(predicted, spectrum.angle()), n_fft, hop, n_fft, torch.hann_window(n_fft), length=length
    )
    out[ORACLE_ROW] = (wave, time.perf_counter() - started)
    # the harmonic vocoder on the same magnitudes, at the recording's own YIN pitch (what a
    # perfect pitch head could give) and, where the model has one, at its head's pitch
    tracks = {HARMONIC_ORACLE_ROW: decoder.pitch_of(audio, predicted.shape[-1])}
    if pitch is not None:
        tracks[HARMONIC_ROW] = decode_pitch(decoder.vocoder_frames(pitch, frames))
    for row, (f0, voiced) in tracks.items():
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        out[row] = (
            decoder.harmonic_at(predicted, f0, voiced, length, generator).audio,
            time.perf_counter() - started,
        )
    return out


def warm_up(decoder: SpectrogramDecoder) -> None:
    """One tiny call of each phase init, so numba's compilation is not timed with the first file."""
    n_fft, hop = decoder.config.n_fft, decoder.config.griffin_lim_hop
    magnitude = torch.rand(1, n_fft // 2 + 1, 8)
    for init in ("random", "pghi"):
        griffin_lim(magnitude, n_fft, hop, 7 * hop, n_iter=1, init=init)


def mean_table(rows: dict[str, list[dict[str, float | None]]]) -> dict[str, dict[str, Any]]:
    """Per row, the mean of each measure over the files it was computed for (None: never)."""
    table: dict[str, dict[str, Any]] = {}
    for name, scores in rows.items():
        table[name] = {}
        for key in scores[0]:
            values = [s[key] for s in scores if s.get(key) is not None]
            table[name][key] = float(np.mean(values)) if values else None  # type: ignore[arg-type]
        table[name]["n"] = len(scores)
    return table


def load_spectrogram_codec(parser: argparse.ArgumentParser, model: str | None) -> Codec:
    """``model`` (None: the bundled one) on the CPU; a parser error unless it has the spectrogram decoder."""
    try:
        model_path = model_or_bundled(model)
        codec = Codec.load(model_path, "cpu")
    except VQSpeechError as exc:
        parser.error(str(exc))
    if "spectrogram" not in codec.decoders:
        parser.error(
            f"{model_path} has no spectrogram decoder (it decodes with: {', '.join(codec.decoders)})"
        )
    return codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint or run folder (default: the bundled model)")
    parser.add_argument(
        "--data", required=True, help="folder of recordings (*.flac, *.wav), searched recursively"
    )
    parser.add_argument("--max", type=int, default=10, help="recordings to use (the first, sorted by path)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initial phases")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = load_spectrogram_codec(parser, args.model)
    files = recordings(Path(args.data), args.max)
    if not files:
        parser.error(f"no *.flac or *.wav under {args.data}")
    model, hop, sr = codec.model, codec.hop_length, codec.sample_rate
    decoder = model.decoders["spectrogram"]
    assert isinstance(decoder, SpectrogramDecoder)
    warm_up(decoder)

    rows: dict[str, list[dict[str, float | None]]] = {ORIGINAL_ROW: []}
    seconds: dict[str, float] = {}
    total_audio = 0.0
    for path in files:
        audio = load_audio(path, sr)
        codes = torch.from_numpy(codec.encode_audio(audio))
        padded = torch.zeros(1, codes.shape[1] * hop)
        padded[0, : len(audio)] = torch.from_numpy(audio)
        with torch.no_grad():
            log_magnitude, pitch = decoder.frames(model.quantizer.lookup(codes), voice_for(codec, audio))
        outputs = vocode_all(decoder, log_magnitude, padded, codes.shape[1], args.seed, pitch)
        original = dnsmos(audio, sr)
        rows[ORIGINAL_ROW].append({"dnsmos_ovrl": original.ovrl if original is not None else None})
        for row, (wave, spent) in outputs.items():
            rows.setdefault(row, []).append(score(audio, wave, sr))
            seconds[row] = seconds.get(row, 0.0) + spent
        total_audio += len(audio) / sr
        print(f"scored {path}", flush=True)

    harmonic = [r for r in (HARMONIC_ORACLE_ROW, HARMONIC_ROW) if r in rows]
    order = [
        ORIGINAL_ROW,
        *(r[0] for r in GRIFFIN_LIM_ROWS),
        ORACLE_ROW,
        *harmonic,
        *(r[0] for r in CEILING_ROWS),
    ]
    table = mean_table({name: rows[name] for name in order})
    for name, spent in seconds.items():
        table[name]["vocoder_seconds"] = spent
        table[name]["x_real_time"] = total_audio / spent if spent > 0 else None

    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    print(
        f"{'magnitudes, phase':<30}{'STOI':>7}{'PESQ':>6}{'log-mel':>9}{'DNSMOS':>8}{'seconds':>9}{'xRT':>7}"
    )
    for name, s in table.items():
        cells = [
            fmt(s.get("stoi"), ".3f"),
            fmt(s.get("pesq"), ".2f"),
            fmt(s.get("log_mel_db"), ".2f"),
            fmt(s.get("dnsmos_ovrl"), ".2f"),
            fmt(s.get("vocoder_seconds"), ".2f"),
            fmt(s.get("x_real_time"), ".0f"),
        ]
        widths = (7, 6, 9, 8, 9, 7)
        print(f"{name:<30}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    print(
        json.dumps(
            {
                "benchmark": "compare_phase",
                "model": str(codec.checkpoint.path),
                "fingerprint": codec.fingerprint,
                "n_fft": decoder.config.n_fft,
                "hop_length": decoder.config.griffin_lim_hop,
                "n_utterances": len(files),
                "audio_seconds": total_audio,
                "scores": table,
            }
        )
    )


if __name__ == "__main__":
    main()
