"""Shared fixtures: generated corpora (synthetic speech, VCTK layouts with quirks, folders).

Everything is made in pytest's temporary folders from seeded signals; nothing touches the
network or the user's cache (corpus caches go to ``ROOT/.vqspeech-cache`` inside the tmp
corpus).

* ``demo_corpus_dir`` (session): 3 speakers x 4 utterances synthesised once with eSpeak NG
  in the VCTK 0.92 layout (s01 female, s02 male, s03 female); ``demo_corpus``: it opened.
* ``make_vctk(root, version)``: a VCTK 0.80 or 0.92 tree of short tones with the real
  corpus's quirks (p315 no text, p280 no mic2, p362 partial, junk files, irregular
  speaker-info); ``vctk_factory`` is the fixture form. :data:`VCTK_EXPECTED` says what a
  correct reader finds in it.
* ``make_folder_corpus(root)``: ``ROOT/<speaker>/...`` with wav/flac/ogg at other rates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vqspeech.data.corpus import Corpus, open_corpus
from vqspeech.data.synth import synthesize_corpus

# Tests use tiny tensors: one intra-op thread is faster for them, and it keeps timings sane
# when other processes (DDP test workers, a busy CI box) compete for the cores.
torch.set_num_threads(1)

VCTK_RATE = 48000

#: What a correct VCTK reader finds in :func:`make_vctk`'s trees: utterances per speaker.
VCTK_EXPECTED: dict[str, dict[str, int]] = {
    "0.80": {"p225": 3, "p226": 3, "p280": 3, "p315": 3, "p362": 2},
    "0.92/mic1": {"p225": 3, "p226": 3, "p280": 3, "p315": 3, "p362": 2, "s5": 2},
    "0.92/mic2": {"p225": 3, "p226": 3, "p315": 3, "p362": 1, "s5": 2},
}

#: Fundamental frequency (Hz) of each fixture speaker's tone: speakers are told apart by it.
VCTK_F0 = {"p225": 220.0, "p226": 110.0, "p280": 247.0, "p315": 131.0, "p362": 196.0, "s5": 262.0}

SPEAKER_INFO_080 = """ID  AGE  GENDER  ACCENTS  REGION
225  23  F    English    Southern  England
226  22  M    English    Surrey
280  25  F    Unknown    France
315  18  M    American    Connecticut
362  29  F    American
"""

SPEAKER_INFO_092 = (
    "ID  AGE  GENDER  ACCENTS  REGION COMMENTS \n"  # the trailing space is in the real file
    "p225  23  F    English    Southern  England\n"
    "p226  22  M    English    Surrey\n"
    "p280  25  F    Unknown    France  (mic2 files unavailable)\n"
    "p315  18  M    American    Connecticut  (Text missing)\n"
    "p362  29  F    American\n"
    "s5  22  F    British    Cambridge\n"
)


def tone(f0: float, seconds: float, sample_rate: int, seed: int = 0, amplitude: float = 0.5) -> np.ndarray:
    """A voiced-sounding test signal: ``f0`` plus two harmonics and a little seeded noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    wave = np.zeros_like(t)
    for k in (1, 2, 3):
        wave += np.sin(2 * np.pi * f0 * k * t) / k / 1.8
    return (amplitude * wave + 0.003 * rng.standard_normal(t.shape[0])).astype(np.float32)


def make_vctk(root: Path, version: str = "0.92", seconds: float = 0.4, lead_silence: float = 0.25) -> Path:
    """Write a small VCTK ``version`` ("0.80" or "0.92") tree under ``root``; return ``root``.

    Quirks, as in the real releases: p315 has audio but no transcripts; p280 has no mic2
    files (0.92); p362 has fewer utterances (and only one mic2 file); ``s5`` (0.92 only);
    junk (``log.txt``, ``.DS_Store``, ``._p225_001.wav``, ``notes.txt``); speaker-info rows
    with multi-word regions, a missing region and (0.92) a COMMENTS column. 0.80 audio has
    ``lead_silence`` seconds of near-silence before and after each tone (to be trimmed).
    """
    root.mkdir(parents=True, exist_ok=True)
    expected = VCTK_EXPECTED["0.80" if version == "0.80" else "0.92/mic1"]
    audio_dir = root / ("wav48" if version == "0.80" else "wav48_silence_trimmed")
    (root / "speaker-info.txt").write_text(SPEAKER_INFO_080 if version == "0.80" else SPEAKER_INFO_092)
    for s_index, (speaker, count) in enumerate(expected.items()):
        spk_dir = audio_dir / speaker
        spk_dir.mkdir(parents=True)
        for i in range(1, count + 1):
            utt = f"{speaker}_{i:03d}"
            audio = tone(VCTK_F0[speaker], seconds + 0.05 * i, VCTK_RATE, seed=100 * s_index + i)
            if version == "0.80":
                pad = (
                    0.0005 * np.random.default_rng(i).standard_normal(int(lead_silence * VCTK_RATE))
                ).astype(np.float32)
                sf.write(
                    spk_dir / f"{utt}.wav", np.concatenate([pad, audio, pad]), VCTK_RATE, subtype="PCM_16"
                )
            else:
                sf.write(spk_dir / f"{utt}_mic1.flac", audio, VCTK_RATE, subtype="PCM_16")
                mic2_count = VCTK_EXPECTED["0.92/mic2"].get(speaker, 0)
                if i <= mic2_count:
                    sf.write(spk_dir / f"{utt}_mic2.flac", 0.8 * audio, VCTK_RATE, subtype="PCM_16")
            if speaker != "p315":
                txt_dir = root / "txt" / speaker
                txt_dir.mkdir(parents=True, exist_ok=True)
                (txt_dir / f"{utt}.txt").write_text(f"Sentence number {i} said by {speaker}.\n")
    (audio_dir / "log.txt").write_text("processed by a script\n")
    (audio_dir / "p225" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (audio_dir / "p225" / "._p225_001.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (audio_dir / "p226" / "notes.txt").write_text("re-recorded on day 2\n")
    return root


def make_folder_corpus(root: Path) -> Path:
    """``root/alice`` (2 x 16 kHz WAV, 1 x 44.1 kHz stereo FLAC in a sub-folder), ``root/bob``
    (2 x 22.05 kHz OGG), plus a hidden folder, a .DS_Store and a loose file to be ignored."""
    (root / "alice" / "day2").mkdir(parents=True)
    (root / "bob").mkdir()
    (root / ".trash").mkdir()
    sf.write(root / "alice" / "a1.wav", tone(200, 0.5, 16000, 1), 16000)
    sf.write(root / "alice" / "a2.wav", tone(210, 0.6, 16000, 2), 16000)
    stereo = np.stack([tone(190, 0.7, 44100, 3), tone(190, 0.7, 44100, 4)], axis=1)
    sf.write(root / "alice" / "day2" / "a3.flac", stereo, 44100)
    sf.write(root / "bob" / "b1.ogg", tone(120, 0.5, 22050, 5), 22050)
    sf.write(root / "bob" / "b2.ogg", tone(125, 0.8, 22050, 6), 22050)
    sf.write(root / ".trash" / "old.wav", tone(300, 0.3, 16000, 7), 16000)
    sf.write(root / "loose.wav", tone(300, 0.3, 16000, 8), 16000)
    (root / "bob" / ".DS_Store").write_bytes(b"junk")
    return root


@pytest.fixture
def vctk_factory(tmp_path: Path) -> Callable[..., Path]:
    """``make(version="0.92", name=None, **kw) -> root``: a fresh quirky VCTK tree in tmp_path."""

    def make(version: str = "0.92", name: str | None = None, **kwargs: float) -> Path:
        return make_vctk(tmp_path / (name or f"vctk-{version}"), version, **kwargs)

    return make


@pytest.fixture(scope="session")
def demo_corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 speakers x 4 utterances of eSpeak NG speech, VCTK 0.92 layout, seed 0 (made once)."""
    root = tmp_path_factory.mktemp("demo") / "corpus"
    synthesize_corpus(root, n_speakers=3, n_utterances=4, seed=0, engines=("espeak",))
    return root


@pytest.fixture(scope="session")
def demo_corpus(demo_corpus_dir: Path) -> Corpus:
    """:data:`demo_corpus_dir` opened (16 kHz cache inside it); do not modify its files."""
    return open_corpus(demo_corpus_dir)
