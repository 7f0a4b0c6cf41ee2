"""The HTML report: self-contained, escaped, with playable embedded WAVs; aims and metrics.csv."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from vqspeech.config import load_recipe
from vqspeech.evaluation.aims import check_aims
from vqspeech.report import read_metrics, summary_lines, write_report

RATE = 16000
EVIL = '<b>"s&1"</b>'  # a speaker name that would break the page if not escaped


def _wav(folder: Path, name: str, f0: float, seconds: float = 0.5) -> np.ndarray:
    audio = tone(f0, seconds, RATE, seed=int(f0))
    sf.write(folder / name, audio, RATE, subtype="PCM_16")
    return audio


def _evaluation(audio_dir: Path, n_samples: int = 3) -> dict[str, Any]:
    """A hand-built ``EvalReport.to_dict()`` whose WAVs exist in ``audio_dir``."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n_samples):
        utt = f"{EVIL}_{i:03d}" if i == 0 else f"s02_{i:03d}"
        _wav(audio_dir, f"u{i}.orig.wav", 200.0 + i)
        _wav(audio_dir, f"u{i}.recon.wav", 201.0 + i)
        _wav(audio_dir, f"u{i}.to_a.wav", 110.0 + i)
        _wav(audio_dir, f"u{i}.to_b.wav", 300.0 + i)
        samples.append(
            {
                "utterance": utt,
                "speaker": EVIL if i == 0 else "s02",
                "orig": f"u{i}.orig.wav",
                "recon": f"u{i}.recon.wav",
                "conversions": {"s03": f"u{i}.to_a.wav", EVIL: f"u{i}.to_b.wav"},
                "seconds": 0.5,
                "stoi": 0.7 + 0.01 * i,
                "log_mel_distance": 8.0,
                "mel_cepstral_distortion": 3.0,
                "pesq": None,
                "recon_heard_as": "s02",
                "conversions_heard_as": {"s03": "s03", EVIL: "s02"},
            }
        )
    return {
        "reconstruction": {
            "stoi": 0.76,
            "log_mel_distance": 8.1,
            "mel_cepstral_distortion": 3.3,
            "pesq": None,
        },
        "codes": {
            "code_counts": [50, 0, 3, 7, 0, 1, 9, 2],
            "codes_used": 6,
            "dead_codes": 2,
            "perplexity": 4.2,
            "entropy_bits": 2.07,
            "entropy_bitrate": 517.0,
            "raw_bitrate": 750.0,
        },
        "conversion": {
            "target_rate": 0.5,
            "source_rate": 0.25,
            "reconstruction_rate": 0.75,
            "classifier_accuracy": 0.9,
            "moved_semitones": 3.0,
            "wanted_semitones": 6.0,
        },
        "leakage": {"accuracy": 0.4, "chance": 0.34},
        "samples": samples,
        "decode_x_real_time": 47.0,
    }


def _metrics_csv(run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = ["step,name,value"]
    for step in range(1, 9):
        lines += [f"{step},train/loss,{5 - 0.3 * step}", f"{step},train/perplexity,{10 + step}"]
    lines += ["4,valid/valid_loss,4.0", "8,valid/valid_loss,3.5", "8,valid/codes_used,6"]
    lines += ["8,train/loss,1.0"]  # step 8 logged again after a resume: the later value wins
    lines += ["9,train/lo"]  # a line cut short by a kill
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")


def _uris(text: str, kind: str) -> list[str]:
    return re.findall(rf'src="data:{re.escape(kind)};base64,([A-Za-z0-9+/=]+)"', text)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    """The report of :func:`_evaluation` (2 of its 3 utterances embedded), written once."""
    tmp_path = tmp_path_factory.mktemp("report")
    evaluation = _evaluation(tmp_path / "audio")
    _metrics_csv(tmp_path / "run")
    path = write_report(
        tmp_path / "out" / "report.html",
        evaluation=evaluation,
        audio_dir=tmp_path / "audio",
        run_dir=tmp_path / "run",
        recipe=load_recipe("demo"),
        step=8,
        corpus=f"3 speakers incl. {EVIL}",
        timings={"synth": 3.0, "train": 75.0},
        tokens={"files": 3, "bytes": 600, "seconds": 1.5},
        max_utterances=2,
    )
    return path.read_text(encoding="utf-8"), evaluation, tmp_path


def test_report_is_one_self_contained_file(report) -> None:
    text, _, tmp_path = report
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text and "<link" not in text
    # 2 utterances embedded x (original + reconstruction + 2 conversions); 2 spectrograms,
    # the codebook histogram and the training curves
    assert len(_uris(text, "audio/wav")) == 2 * 4
    assert len(_uris(text, "image/png")) == 2 + 2
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]  # no temp file left


def test_report_escapes_names_and_lists_what_it_left_out(report) -> None:
    text, _, _ = report
    assert EVIL not in text and '<b>"s&1' not in text
    assert "&lt;b&gt;&quot;s&amp;1&quot;&lt;/b&gt;" in text
    assert "converted to &lt;b&gt;" in text
    assert "s02_002" in text and "Not embedded" in text  # the third utterance is only named
    # who the speaker classifier hears: green when it is who should speak
    assert '<span class="met">s03</span>' in text and '<span class="missed">s02</span>' in text
    assert "STOI 0.710 · log-mel distance 8.0 dB · MCD 3.0 dB" in text


def test_embedded_wavs_decode_to_the_files_audio(report) -> None:
    text, _, tmp_path = report
    first = base64.b64decode(_uris(text, "audio/wav")[0])
    audio, rate = sf.read(io.BytesIO(first), dtype="float32")
    original, _ = sf.read(tmp_path / "audio" / "u0.orig.wav", dtype="float32")
    assert rate == RATE and audio.shape == original.shape
    np.testing.assert_allclose(audio, original, atol=1.0 / 32768)
    png = base64.b64decode(_uris(text, "image/png")[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_report_headline_and_metrics(report) -> None:
    text, _, _ = report
    assert "trained for 8 steps" in text and "1 min 15 s of training" in text
    assert "spectrogram decoder (harmonic-plus-noise vocoder at a predicted pitch)" in text  # the demo's
    assert "0.760" in text and "met</span>" in text  # STOI aim met
    assert "50 %" in text and "not met</span>" in text  # conversion aim missed
    assert "8.10 dB" in text and "750 bits/s" in text and "n/a" in text  # pesq missing
    assert "3 .vqt files" in text and "3,200 bits/s" in text  # 600 bytes over 1.5 s


def test_check_aims() -> None:
    met, missed = check_aims({"reconstruction": {"stoi": 0.8}, "conversion": {"target_rate": 0.79}})
    assert met.met and not missed.met
    assert missed.describe().endswith("79 % (aim >= 80 %: not met)")
    assert [r.value for r in check_aims({})] == [None, None]
    assert not any(r.met for r in check_aims({"reconstruction": {"stoi": float("nan")}}))


def test_read_metrics_keeps_the_last_value_per_step(tmp_path: Path) -> None:
    _metrics_csv(tmp_path)
    metrics = read_metrics(tmp_path / "metrics.csv")
    steps, values = metrics["train/loss"]
    assert steps == list(range(1, 9)) and values[-1] == 1.0
    assert metrics["valid/valid_loss"] == ([4, 8], [4.0, 3.5])
    assert read_metrics(tmp_path / "missing.csv") == {}


def test_report_without_run_or_samples_still_renders(tmp_path: Path) -> None:
    path = write_report(tmp_path / "r.html", evaluation={}, audio_dir=tmp_path)
    text = path.read_text()
    assert "No utterances were evaluated" in text and "No training metrics" in text
    assert "data:audio" not in text


def test_summary_lines_name_the_headline_numbers() -> None:
    lines = summary_lines({"codes": {"codes_used": 6, "codebook_size": 8, "entropy_bitrate": -0.0}})
    assert lines[1].startswith("codes: 6 of 8 used, 0 bits/s at their entropy (n/a raw)")
    assert "STOI n/a" in lines[0] and "chance n/a" in lines[2]
