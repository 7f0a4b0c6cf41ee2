"""The voice catalogues: the default one never changes; the broad one holds every usable voice.

Festival discovery is tested on folder layouts made in ``tmp_path`` (diphone and HTS voices, a
shared folder that is not a voice); the installed voices only where Festival is here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vqspeech.data import voices
from vqspeech.data.synth import plan_corpus
from vqspeech.errors import DataError
from vqspeech_cli.data import app

#: The first 16 voices of the eSpeak-only catalogue: what every small eSpeak corpus is made of.
ESPEAK_FIRST_16 = [
    ("en-us+f2", 58, 165), ("en+m3", 38, 160), ("en-gb-scotland+f4", 54, 160), ("en-us+m1", 30, 170),
    ("en+f3", 62, 170), ("en-gb-scotland+m2", 42, 165), ("en-029+f1", 50, 155),
    ("en-gb-x-gbcwmd+m4", 34, 155), ("en-gb-x-rp+f5", 66, 175), ("en-029+m5", 40, 160),
    ("en-gb-x-gbcwmd+steph", 56, 160), ("en-gb-x-rp+m7", 28, 175), ("en-us-nyc+belinda", 60, 180),
    ("en-us-nyc+m6", 36, 185), ("en-gb-x-gbclan+Annie", 52, 165), ("en-gb-x-gbclan+m8", 44, 160),
]  # fmt: skip


def test_the_espeak_catalogue_is_unchanged_and_starts_the_broad_one() -> None:
    default = voices.voice_catalogue(("espeak",))
    assert [(v.name, v.pitch, v.rate) for v in default[:16]] == ESPEAK_FIRST_16
    assert all(v.engine == "espeak" and v.tract == 1.0 for v in default)
    broad = voices.voice_catalogue(("espeak",), "broad")
    assert broad[: len(default)] == default
    assert voices.voices_for(16, ("espeak",), "broad") == voices.voices_for(16, ("espeak",))
    everything = voices.voice_catalogue()  # whatever is installed: still the default ones first
    assert voices.voice_catalogue(None, "broad")[: len(everything)] == everything


def test_the_broad_catalogue_has_many_distinct_voices() -> None:
    broad = voices.voice_catalogue(("espeak",), "broad")
    names = [v.name for v in broad]
    assert len(broad) >= 400 and len(set(names)) == len(names)
    languages = {name.split("+")[0] for name in names}
    assert languages == {language for language, _, _ in voices.ESPEAK_ACCENTS}
    variants = {name.split("+")[1].lower() for name in names}
    assert len(variants) >= 60 and not variants & voices.ESPEAK_SKIPPED_VARIANTS
    assert not any(v.startswith("robosoft") for v in variants)
    extra = broad[16:]
    # Each pass uses every variant once, genders alternating, before any variant comes back.
    first_pass = extra[: len(voices.espeak_variants()) - 8]
    assert len({v.name.split("+")[1] for v in first_pass}) == len(first_pass)
    assert [v.gender for v in extra[:6]] == ["F", "M"] * 3
    assert {v.gender for v in broad} == {"F", "M"}
    many = voices.voices_for(len(broad) + 20, ("espeak",), "broad")
    assert len({(v.name, v.pitch, v.rate, v.tract) for v in many}) == len(many)
    with pytest.raises(DataError, match="unknown voice catalogue 'huge'"):
        voices.voice_catalogue(("espeak",), "huge")


def test_espeak_variant_genders_and_names(tmp_path: Path) -> None:
    folder = tmp_path / "voices" / "!v"
    folder.mkdir(parents=True)
    (folder / "anna").write_text("name Anna\ngender female\npitch 120 200\n")
    (folder / "bob").write_text("name Bob\n// gender female (a comment)\npitch 80 120\n")
    (folder / "kid").write_text("name Kid\npitch 240 390\n")
    (folder / "Mr serious").write_text("name Mr serious\ngender male\n")
    (folder / "robosoft9").write_text("name Robot\n")
    (folder / "whisper").write_text("gender male\n")
    found = voices.espeak_variants(tmp_path)
    assert [(v.name, v.gender) for v in found] == [("anna", "F"), ("bob", "M"), ("kid", "F")]
    with pytest.raises(DataError, match="cannot list"):
        voices.espeak_variants(tmp_path / "missing")


def test_festival_discovery_handles_diphone_and_hts_layouts(tmp_path: Path) -> None:
    def voice(language: str, name: str, units: str) -> None:
        (tmp_path / language / name / units).mkdir(parents=True)
        (tmp_path / language / name / "festvox").mkdir()
        (tmp_path / language / name / "festvox" / f"{name}.scm").write_text("(proclaim_voice ...)")

    voice("english", "kal_diphone", "group")
    voice("us", "cmu_us_slt_arctic_hts", "hts")
    voice("italian", "lp_diphone", "group")
    voice("english", "new_diphone", "group")
    (tmp_path / "finnish" / "suopuhe.common").mkdir(parents=True)  # shared files, not a voice
    (tmp_path / "finnish" / "suopuhe.common" / "finnish_lex.scm").write_text("")
    (tmp_path / "english" / "broken_voice" / "festvox").mkdir(parents=True)  # no definition file
    (tmp_path / "README").write_text("not a language folder")
    found = voices.festival_voices([tmp_path, tmp_path / "missing"])
    assert found == {
        "cmu_us_slt_arctic_hts": "us",
        "kal_diphone": "english",
        "lp_diphone": "italian",
        "new_diphone": "english",
    }
    slt = voices.festival_voice("cmu_us_slt_arctic_hts", "us")
    assert (slt.engine, slt.gender, slt.accent) == ("festival", "F", "American")
    assert voices.festival_voice("lp_diphone", "italian").accent == "Italian"
    unknown = voices.festival_voice("new_diphone", "english")
    assert (unknown.gender, unknown.accent) == ("?", "English")


FESTIVAL_HERE = "festival" in voices.available_engines()


@pytest.mark.skipif(not FESTIVAL_HERE, reason="optional: Festival not installed")
def test_installed_festival_voices_are_in_the_broad_catalogue_and_speak() -> None:
    installed = voices.festival_voices()
    broad = [v for v in voices.voice_catalogue(("festival",), "broad") if v.engine == "festival"]
    assert {v.name for v in broad} == set(installed)
    hts = [name for name in installed if name.endswith("_hts")]
    if not hts:
        pytest.skip("no Festival HTS voice installed (apt-get install festvox-us-slt-hts)")
    voice = voices.festival_voice(hts[0], installed[hts[0]])
    audio, rate = voices.synthesize("Six spoons of fresh snow peas.", voice)
    assert audio.shape[0] > 0.8 * rate and abs(audio).max() > 0.05


@pytest.mark.skipif(not FESTIVAL_HERE, reason="optional: Festival not installed")
def test_engines_can_be_held_out() -> None:
    others = tuple(e for e in voices.available_engines() if e != "festival")
    train = plan_corpus(12, 1, engines=others, catalogue="broad")
    test = plan_corpus(4, 1, engines=("festival",), catalogue="broad")
    assert {s.voice.engine for s, _ in train} <= set(others)
    assert {s.voice.engine for s, _ in test} == {"festival"}


def test_cli_synth_broad_voices(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "broad"
    args = [
        "synth",
        str(out),
        "--speakers",
        "18",
        "--utterances",
        "1",
        "--engine",
        "espeak",
        "--voices",
        "broad",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = (out / "speaker-info.txt").read_text()
    assert "espeak en-us+f2 pitch=58" in info and "s17" in info and "tract=" not in info
    bad = runner.invoke(app, ["synth", str(tmp_path / "x"), "--voices", "huge"])
    assert bad.exit_code != 0 and "huge" in bad.output and "Traceback" not in bad.output
