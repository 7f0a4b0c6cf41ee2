"""The demo corpus: eSpeak NG speech in the VCTK 0.92 layout, deterministic, distinct voices; its CLI.

eSpeak NG (pip: espeakng-loader) is a dependency of the project: these tests fail, not
skip, when it cannot be loaded. flite and Festival are optional and tested only if present.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from vqspeech.data import voices
from vqspeech.data.corpus import Corpus, open_corpus
from vqspeech.data.sentences import SENTENCES
from vqspeech.data.synth import Prosody, plan_corpus, render, synthesize_corpus
from vqspeech.data.vctk import parse_speaker_info
from vqspeech.errors import DataError
from vqspeech_cli.data import app

runner = CliRunner()


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".vqspeech-cache" not in p.parts
    }


def median_f0(audio: np.ndarray, sample_rate: int) -> float:
    """Median pitch of voiced 40 ms frames by autocorrelation (60-400 Hz)."""
    frame = int(0.04 * sample_rate)
    lo, hi = sample_rate // 400, sample_rate // 60
    pitches = []
    for start in range(0, audio.shape[0] - frame, frame // 2):
        x = audio[start : start + frame] - audio[start : start + frame].mean()
        if np.sqrt(np.mean(x * x)) < 0.03:
            continue
        ac = np.correlate(x, x, "full")[frame - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            pitches.append(sample_rate / lag)
    assert pitches, "no voiced frames found"
    return float(np.median(pitches))


def test_espeak_loads_and_speaks() -> None:
    samples, rate = voices.ESpeak().synthesize("Hello there.", voices.ESPEAK_MALE[0])
    assert rate == 22050 and samples.dtype == np.int16 and samples.shape[0] > 0.3 * rate
    with pytest.raises(DataError, match="no voice"):
        voices.ESpeak().synthesize("Hi.", voices.Voice("espeak", "xx-nope", "M", "a", "b"))


def test_demo_corpus_has_the_vctk_092_layout(demo_corpus_dir: Path) -> None:
    root = demo_corpus_dir
    speakers = ["s01", "s02", "s03"]
    info = parse_speaker_info((root / "speaker-info.txt").read_text())
    assert list(info) == speakers
    assert [info[s].gender for s in speakers] == ["F", "M", "F"]
    assert all(info[s].accent and info[s].age and "espeak" in (info[s].comment or "") for s in speakers)
    for speaker in speakers:
        flacs = sorted((root / "wav48_silence_trimmed" / speaker).iterdir())
        assert [p.name for p in flacs] == [f"{speaker}_{i:03d}_mic1.flac" for i in range(1, 5)]
        texts = sorted((root / "txt" / speaker).iterdir())
        assert [p.name for p in texts] == [f"{speaker}_{i:03d}.txt" for i in range(1, 5)]
        for flac in flacs:
            meta = sf.info(str(flac))
            assert (meta.samplerate, meta.channels, meta.format, meta.subtype) == (48000, 1, "FLAC", "PCM_16")
            assert 1.0 < meta.duration < 8.0
    shared = {(root / "txt" / s / f"{s}_001.txt").read_text() for s in speakers}
    assert len(shared) == 1 and shared.pop().strip() in SENTENCES  # utterance 001 is common


def test_demo_corpus_opens_as_vctk(demo_corpus: Corpus) -> None:
    assert demo_corpus.kind == "vctk-0.92" and len(demo_corpus) == 12
    assert demo_corpus.speakers.names == ["s01", "s02", "s03"]
    assert all(u.text in SENTENCES for u in demo_corpus.utterances)
    assert demo_corpus.warnings == ()
    assert 20 < demo_corpus.total_seconds < 80


def test_voices_differ_in_pitch(demo_corpus: Corpus) -> None:
    def speaker_f0(name: str) -> float:
        utt = next(u for u in demo_corpus.utterances if u.speaker == name)
        audio, rate = sf.read(utt.path, dtype="float32")
        return median_f0(audio, rate)

    female, male = speaker_f0("s01"), speaker_f0("s02")
    assert female > 1.5 * male, (female, male)
    assert 60 < male < 160 and 150 < female < 350


def test_vocal_tract_scale_moves_pitch_and_shortens_in_step() -> None:
    text = "The rainbow is a division of white light into many beautiful colours."
    voice = voices.ESPEAK_MALE[0]
    plain = render(text, voice, seed=3)
    scaled = render(text, replace(voice, tract=1.25), seed=3)
    # the 50 ms margins do not scale; the speech between them does
    margin = 2 * int(0.05 * 48000)
    assert (len(plain) - margin) / (len(scaled) - margin) == pytest.approx(1.25, rel=0.02)
    assert median_f0(scaled, 48000) / median_f0(plain, 48000) == pytest.approx(1.25, rel=0.06)


def pitch_spread(audio: np.ndarray, sample_rate: int) -> float:
    """Semitones between the 10th and 90th percentile of voiced 40 ms frames' pitch (autocorrelation)."""
    frame = int(0.04 * sample_rate)
    lo, hi = sample_rate // 400, sample_rate // 60
    pitches = []
    for start in range(0, audio.shape[0] - frame, frame // 2):
        x = audio[start : start + frame] - audio[start : start + frame].mean()
        if np.sqrt(np.mean(x * x)) < 0.03:
            continue
        ac = np.correlate(x, x, "full")[frame - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            pitches.append(sample_rate / lag)
    semitones = 12 * np.log2(np.array(pitches))
    return float(np.percentile(semitones, 90) - np.percentile(semitones, 10))


def test_prosody_changes_duration_pitch_and_intonation_as_asked() -> None:
    text = "The rainbow is a division of white light into many beautiful colours."
    voice = voices.ESPEAK_MALE[0]
    plain = render(text, voice, seed=3)
    margin = 2 * int(0.05 * 48000)
    faster = render(text, replace(voice, rate=round(voice.rate * 1.4)), seed=3)
    assert (len(plain) - margin) / (len(faster) - margin) == pytest.approx(1.4, rel=0.1)
    higher = render(text, replace(voice, pitch=voice.pitch + 20), seed=3)
    assert median_f0(higher, 48000) > median_f0(plain, 48000) * 2 ** (2 / 12)  # > 2 semitones up
    flat = pitch_spread(render(text, replace(voice, pitch_range=0), seed=3), 48000)
    lively = pitch_spread(render(text, replace(voice, pitch_range=100), seed=3), 48000)
    assert flat < 1.5 and lively > 4.0 and lively > pitch_spread(plain, 48000) > flat


def test_prosody_draws_stay_in_their_ranges_and_leave_other_engines_alone() -> None:
    prosody = Prosody(rate_octaves=0.25, pitch_spread=10, pitch_range=(30, 70))
    voice = voices.ESPEAK_FEMALE[0]
    drawn = [prosody.draw(voice, np.random.default_rng([0, i])) for i in range(200)]
    assert drawn == [prosody.draw(voice, np.random.default_rng([0, i])) for i in range(200)]
    assert all(voice.rate * 2**-0.25 - 1 <= v.rate <= voice.rate * 2**0.25 + 1 for v in drawn)
    assert all(abs(v.pitch - voice.pitch) <= 10 and 30 <= v.pitch_range <= 70 for v in drawn)
    assert len({(v.rate, v.pitch, v.pitch_range) for v in drawn}) > 150
    assert all((v.name, v.tract, v.label.split()[1]) == (voice.name, voice.tract, voice.name) for v in drawn)
    assert prosody.draw(voices.FLITE_VOICES[0], np.random.default_rng(0)) == voices.FLITE_VOICES[0]
    with pytest.raises(DataError):
        Prosody(pitch_range=(60, 40))


def test_corpus_with_prosody_is_seeded_and_the_default_is_unchanged(
    tmp_path: Path, demo_corpus_dir: Path
) -> None:
    args = {"n_speakers": 1, "n_utterances": 3, "seed": 0, "engines": ("espeak",)}
    a = synthesize_corpus(tmp_path / "a", prosody=Prosody(), **args)  # type: ignore[arg-type]
    synthesize_corpus(tmp_path / "b", prosody=Prosody(), workers=1, **args)  # type: ignore[arg-type]
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    plain = tree_digest(demo_corpus_dir)  # the session corpus: seed 0, no prosody
    varied = tree_digest(tmp_path / "a")
    for name, digest in varied.items():
        if name.endswith(".flac") or name.startswith("phones/"):  # the audio and its phone timings
            assert plain[name] != digest, name
        else:
            assert plain.get(name, digest) == digest or name == "speaker-info.txt", name
    assert a.speakers[0].voice == voices.voice_catalogue(("espeak",))[0]  # the speaker's own voice


def test_voices_past_the_catalogue_are_new_timbres() -> None:
    catalogue = voices.voice_catalogue(("espeak",))
    many = voices.voices_for(3 * len(catalogue) + 5, ("espeak",))
    assert many[: len(catalogue)] == catalogue  # small corpora do not change
    extra = many[len(catalogue) :]
    assert all(0.86 <= v.tract <= 1.16 and v.tract != 1.0 for v in extra)
    assert len({(v.name, v.pitch, v.rate, v.tract) for v in many}) == len(many)
    for base in catalogue:  # one voice's copies get different vocal tracts
        tracts = [v.tract for v in extra if v.name == base.name]
        assert len(tracts) >= 2 and min(np.diff(sorted(tracts))) > 0.02, (base.name, tracts)
    assert "tract=" in extra[0].label and "tract" not in catalogue[0].label


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path: Path, demo_corpus_dir: Path) -> None:
    a = synthesize_corpus(tmp_path / "a", n_speakers=2, n_utterances=2, seed=0, engines=("espeak",))
    synthesize_corpus(tmp_path / "b", n_speakers=2, n_utterances=2, seed=0, engines=("espeak",), workers=1)
    assert a.n_utterances == 4 and a.seconds > 2 and [s.name for s in a.speakers] == ["s01", "s02"]
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    # A subset of the session corpus (same seed): same voices, same sentences, same bytes.
    session = tree_digest(demo_corpus_dir)
    for name, digest in tree_digest(tmp_path / "a").items():
        if name.endswith(("_001_mic1.flac", "_002_mic1.flac", "_001.txt", "_002.txt")):
            assert session[name] == digest, name
    synthesize_corpus(tmp_path / "c", n_speakers=2, n_utterances=2, seed=1, engines=("espeak",))
    assert tree_digest(tmp_path / "c") != tree_digest(tmp_path / "a")


def test_plan_is_deterministic_and_varied() -> None:
    plan = plan_corpus(20, 30, seed=4, engines=("espeak",))
    assert plan == plan_corpus(20, 30, seed=4, engines=("espeak",))
    assert plan != plan_corpus(20, 30, seed=5, engines=("espeak",))
    assert len({(s.voice.name, s.voice.pitch, s.voice.rate) for s, _ in plan}) == 20
    assert [s.name for s, _ in plan][:3] == ["s01", "s02", "s03"]
    assert [s.voice.gender for s, _ in plan][:4] == ["F", "M", "F", "M"]
    for _, sentences in plan:
        assert sentences[0] == plan[0][1][0] and len(set(sentences)) == 30
    long_plan = plan_corpus(1, len(SENTENCES) + 10)
    assert len(long_plan[0][1]) == len(SENTENCES) + 10
    with pytest.raises(DataError):
        plan_corpus(0, 3)


def test_engine_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="unknown synthesis engine 'sapi'"):
        plan_corpus(2, 2, engines=("sapi",))
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    assert voices.available_engines() == ("espeak",)
    with pytest.raises(DataError, match="'flite' is not installed"):
        plan_corpus(2, 2, engines=("flite",))


def test_refuses_a_non_empty_folder_unless_overwriting(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        synthesize_corpus(out, n_speakers=1, n_utterances=1, engines=("espeak",))
    synthesize_corpus(out, n_speakers=2, n_utterances=1, engines=("espeak",), overwrite=True)
    synthesize_corpus(out, n_speakers=1, n_utterances=1, engines=("espeak",), overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "wav48_silence_trimmed").iterdir()) == ["s01"]


@pytest.mark.skipif(
    not ({"flite", "festival"} & set(voices.available_engines())),
    reason="optional: flite/Festival not installed",
)
def test_optional_engines_when_installed(tmp_path: Path) -> None:
    engines = tuple(e for e in ("flite", "festival") if e in voices.available_engines())
    result = synthesize_corpus(tmp_path / "n", n_speakers=2, n_utterances=1, engines=engines)
    assert {s.voice.engine for s in result.speakers} <= set(engines)
    assert open_corpus(tmp_path / "n").speakers.names == ["s01", "s02"]


def test_cli_synth(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(
        app, ["synth", str(out), "--speakers", "2", "--utterances", "2", "--engine", "espeak"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 4 utterances" in result.output and "s01=espeak:" in result.output
    assert len(list((out / "wav48_silence_trimmed").rglob("*.flac"))) == 4

    again = runner.invoke(app, ["synth", str(out), "--speakers", "2", "--utterances", "2"])
    assert again.exit_code == 1
    assert "error:" in again.output and "--overwrite" in again.output and "Traceback" not in again.output

    bad = runner.invoke(app, ["synth", str(tmp_path / "x"), "--speakers", "0"])
    assert bad.exit_code == 2
    assert runner.invoke(app, ["synth", "--help"]).exit_code == 0
