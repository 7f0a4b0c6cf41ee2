"""Phone spans from eSpeak NG: plausible, tiling the audio, following the corpus's trimming."""

from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqspeech.data import voices
from vqspeech.data.phones import (
    SILENCE,
    phone_alignment,
    phone_name,
    read_phones,
    shift_spans,
    spans_from_events,
    utterance_phones,
    write_phones,
)
from vqspeech.data.synth import Prosody, synthesize_corpus
from vqspeech.errors import DataError

TOKEN_S = 64 / 16000


def assert_tiles(spans: list[tuple[float, float, str]], duration: float, tolerance: float = 1e-6) -> None:
    assert spans[0][0] == 0.0
    assert abs(spans[-1][1] - duration) <= tolerance
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert abs(end - start) <= tolerance
    assert all(end > start for start, end, _ in spans)


def test_phone_alignment_of_a_short_sentence() -> None:
    voice = voices.ESPEAK_MALE[0]
    text = "The cat sat on the mat."
    spans = phone_alignment(text, voice)
    audio, rate = voices.synthesize(text, voice)
    # eSpeak's state moves the end by a few samples from one call to the next
    assert_tiles(spans, audio.shape[0] / rate, tolerance=0.001)
    phones = [p for _, _, p in spans if p != SILENCE]
    assert 12 <= len(phones) <= 24, phones  # ~16 phones: D @ k a t s a t O n D @ m a t
    assert {"k", "t", "m", "n"} <= set(phones)
    assert spans[0][2] == SILENCE and spans[-1][2] == SILENCE
    assert all(not p.startswith(("'", ",")) for p in phones)  # stress marks dropped
    # A shorter vocal tract plays the same samples faster: every duration divided by the scale.
    scaled = phone_alignment(text, replace(voice, tract=1.25))
    assert [p for _, _, p in scaled] == [p for _, _, p in spans]
    ratios = [(e - s) / (se - ss) for (s, e, _), (ss, se, _) in zip(spans, scaled, strict=True)]
    assert np.allclose(ratios, 1.25, rtol=0.02)
    with pytest.raises(DataError, match="eSpeak NG only"):
        phone_alignment(text, voices.FLITE_VOICES[0])


def test_reporting_phonemes_does_not_change_the_audio() -> None:
    # eSpeak keeps state between utterances: compare whole sequences, each in a fresh process.
    script = (
        "import hashlib, sys; from vqspeech.data import voices as v; h = hashlib.sha256()\n"
        "for i, t in enumerate(['Six spoons of fresh snow peas.', 'The rainbow is a division of light.']):\n"
        "    for voice in v.ESPEAK_FEMALE[:2] + v.ESPEAK_MALE[:1]:\n"
        "        speak = v.synthesize_with_phones if sys.argv[1] == '1' else v.synthesize\n"
        "        a = speak(t, voice, i)[0]\n"
        "        h.update(a.tobytes())\n"
        "print(h.hexdigest())\n"
    )
    digests = [
        subprocess.run(
            [sys.executable, "-c", script, flag], capture_output=True, text=True, check=True
        ).stdout
        for flag in ("0", "1")
    ]
    assert digests[0] == digests[1] and len(digests[0].strip()) == 64


def test_spans_from_events_and_shifting() -> None:
    spans = spans_from_events([(100, "h"), (300, "'E"), (300, "l"), (500, "_:"), (600, "_")], 800, 1000.0)
    assert spans == [(0.0, 0.1, SILENCE), (0.1, 0.3, "h"), (0.3, 0.5, "l"), (0.5, 0.8, SILENCE)]
    assert phone_name(",a#") == "a#" and phone_name("_!") == SILENCE
    moved = shift_spans(spans, offset_s=-0.05, duration_s=0.6)
    assert [p for _, _, p in moved] == [SILENCE, "h", "l", SILENCE]
    assert np.allclose([e for _, e, _ in moved], [0.05, 0.25, 0.45, 0.6])
    padded = shift_spans(spans[1:3], offset_s=0.2, duration_s=1.0)
    assert [p for _, _, p in padded] == [SILENCE, "h", "l", SILENCE]
    assert_tiles(padded, 1.0)


def test_phone_files_round_trip_and_refuse_bad_ones(tmp_path: Path) -> None:
    spans = [(0.0, 0.05, SILENCE), (0.05, 0.1234, "t"), (0.1234, 0.3, "i:")]
    path = write_phones(tmp_path / "a" / "u.tsv", spans)
    assert read_phones(path) == spans
    (tmp_path / "bad.tsv").write_text("start_s\tend_s\tphone\n0.0\t0.1\n")
    with pytest.raises(DataError, match="line 2"):
        read_phones(tmp_path / "bad.tsv")
    (tmp_path / "back.tsv").write_text("start_s\tend_s\tphone\n0.0\t0.2\ta\n0.1\t0.3\tb\n")
    with pytest.raises(DataError, match="overlap"):
        read_phones(tmp_path / "back.tsv")
    (tmp_path / "plain.tsv").write_text("0.0\t0.1\ta\n")
    with pytest.raises(DataError, match="not a phone file"):
        read_phones(tmp_path / "plain.tsv")


def test_corpus_phone_files_follow_the_written_audio(demo_corpus_dir: Path) -> None:
    assert_phones_follow_audio(demo_corpus_dir, n_files=12)


def test_phone_files_follow_utterances_with_their_own_prosody(tmp_path: Path) -> None:
    # Prosody changes each utterance's rate and pitch: its phone timings must come from the
    # same eSpeak call as its audio, not from the speaker's plain voice.
    synthesize_corpus(tmp_path / "p", n_speakers=1, n_utterances=3, engines=("espeak",), prosody=Prosody())
    assert_phones_follow_audio(tmp_path / "p", n_files=3)


def assert_phones_follow_audio(root: Path, n_files: int) -> None:
    wavs = sorted((root / "wav48_silence_trimmed").rglob("*.flac"))
    assert len(wavs) == n_files
    for wav in wavs:
        speaker, utt = wav.parent.name, wav.name.removesuffix("_mic1.flac")
        spans = utterance_phones(root, speaker, utt)
        assert spans is not None, utt
        audio, rate = sf.read(wav, dtype="float32")
        duration = audio.shape[0] / rate
        assert_tiles(spans, duration, tolerance=TOKEN_S)  # 4-decimal times, one token at most
        # The first phone starts where the speech does (after the kept 50 ms margin): the
        # labels followed the trimming. Onset: the first 5 ms frame within 30 dB of the peak.
        frames = audio[: audio.shape[0] // 240 * 240].reshape(-1, 240)
        level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        onset = np.flatnonzero(level > level.max() - 30)[0] * 240 / rate
        first = next(start for start, _, p in spans if p != SILENCE)
        assert abs(first - onset) < 0.04, (utt, first, onset)
        assert spans[0][2] == SILENCE and spans[0][1] >= 0.045


def test_only_espeak_utterances_get_phone_files(tmp_path: Path) -> None:
    if "flite" not in voices.available_engines():
        pytest.skip("optional: flite not installed")
    result = synthesize_corpus(tmp_path / "c", n_speakers=3, n_utterances=1, engines=("flite", "espeak"))
    assert [s.voice.engine for s in result.speakers] == ["flite", "flite", "espeak"]
    assert utterance_phones(tmp_path / "c", "s01", "s01_001") is None
    assert sorted(p.name for p in (tmp_path / "c" / "phones").iterdir()) == ["s03"]
