"""CSTR VCTK: the 0.80 and 0.92 releases, their layout, speaker table and known quirks.

* 0.80 (``VCTK-Corpus``): ``wav48/pNNN/pNNN_NNN.wav`` (48 kHz WAV with leading and
  trailing silence), ``txt/pNNN/pNNN_NNN.txt``, ``speaker-info.txt`` with columns
  ``ID AGE GENDER ACCENTS REGION`` where IDs have no ``p`` (``225``), regions span several
  words and some rows have none.
* 0.92 (``VCTK-Corpus-0.92``): ``wav48_silence_trimmed/pNNN/pNNN_NNN_mic1.flac`` and
  ``..._mic2.flac`` (two microphones, already trimmed), the same ``txt/``, and a
  ``speaker-info.txt`` with an extra ``COMMENTS`` column (``(mic2 files unavailable)``)
  and rows such as ``p280`` and ``s5``.

Quirks handled without failing: p315 has audio but no transcripts (``text`` is None);
p280 has no mic2 recordings (with ``mic="mic2"`` the speaker is left out, with a warning);
p362 has fewer utterances than others; anything that is not ``<speaker>_<NNN>[_micN]``
audio (``log.txt``, ``.DS_Store``, macOS ``._*`` files) is ignored.

This module imports no torch.
"""

from __future__ import annotations

import re
from pathlib import Path

from vqspeech.data.cache import Source
from vqspeech.data.speakers import Speaker
from vqspeech.errors import DataError

VCTK_080 = "vctk-0.80"
VCTK_092 = "vctk-0.92"

#: Leading/trailing silence below this many dB under the loudest frame is cut from 0.80
#: recordings (0.92 ships trimmed). Conservative: quiet onsets such as /s/ survive.
VCTK_080_TRIM_DB = 35.0

MICS = ("mic1", "mic2")

_AUDIO_DIR = {VCTK_080: "wav48", VCTK_092: "wav48_silence_trimmed"}
_FILE_080 = re.compile(r"^(?P<utt>[A-Za-z0-9]+_\d+)\.wav$")
_FILE_092 = re.compile(r"^(?P<utt>[A-Za-z0-9]+_\d+)_(?P<mic>mic[12])\.(?:flac|wav)$")
_COMMENT = re.compile(r"^(?P<region>.*?)\s*\((?P<comment>[^()]*)\)\s*$")


def detect_vctk(root: Path) -> str | None:
    """``"vctk-0.92"``, ``"vctk-0.80"`` or None, from the audio folder found under ``root``."""
    if (root / _AUDIO_DIR[VCTK_092]).is_dir():
        return VCTK_092
    if (root / _AUDIO_DIR[VCTK_080]).is_dir():
        return VCTK_080
    return None


def parse_speaker_info(text: str) -> dict[str, Speaker]:
    """Parse VCTK's ``speaker-info.txt`` (either release) into ``{name: Speaker}``.

    Columns are whitespace separated: ``ID AGE GENDER ACCENTS REGION [COMMENTS]``. A
    numeric ID (0.80) gets a ``p`` prefix so names match the audio folders; the region is
    everything after the accent (several words or none); a trailing ``(...)`` is the
    comment. Rows too short to hold an ID are skipped; unparsable ages/genders become None.
    """
    speakers: dict[str, Speaker] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].upper() == "ID" or fields[0].startswith("#"):
            continue
        name = fields[0]
        if name.isdigit():
            name = f"p{name}"
        age = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
        gender = fields[2].upper() if len(fields) > 2 and fields[2].upper() in ("M", "F") else None
        accent = fields[3] if len(fields) > 3 else None
        rest = " ".join(fields[4:])
        comment = None
        match = _COMMENT.match(rest)
        if match:
            rest, comment = match["region"], match["comment"].strip() or None
        speakers[name] = Speaker(
            name=name, age=age, gender=gender, accent=accent, region=rest or None, comment=comment
        )
    return speakers


def scan_vctk(
    root: Path, version: str, mic: str = "mic1"
) -> tuple[list[Source], dict[str, Speaker], list[str]]:
    """Find a VCTK release's utterances: ``(sources, speaker metadata, warnings)``.

    ``mic`` picks the 0.92 microphone (``mic1`` or ``mic2``) and is ignored for 0.80.
    Speakers without any audio for that microphone are left out with a warning.
    """
    if mic not in MICS:
        raise DataError(f"unknown VCTK microphone {mic!r}; use mic1 or mic2")
    info_path = root / "speaker-info.txt"
    info: dict[str, Speaker] = {}
    warnings: list[str] = []
    if info_path.is_file():
        info = parse_speaker_info(info_path.read_text(encoding="utf-8", errors="replace"))
    else:
        warnings.append(f"{info_path} is missing: speakers have no age/gender/accent metadata")

    audio_root = root / _AUDIO_DIR[version]
    sources: list[Source] = []
    for speaker_dir in sorted(audio_root.iterdir()):
        if not speaker_dir.is_dir() or speaker_dir.name.startswith("."):
            continue
        speaker = speaker_dir.name
        found = 0
        other_mic = 0
        for path in sorted(speaker_dir.iterdir()):
            if version == VCTK_080:
                match = _FILE_080.match(path.name)
            else:
                match = _FILE_092.match(path.name)
                if match and match["mic"] != mic:
                    other_mic += 1
                    continue
            if not match or not path.is_file():
                continue
            utt = match["utt"]
            sources.append(Source(id=utt, speaker=speaker, path=path, text=_read_text(root, speaker, utt)))
            found += 1
        if found == 0 and other_mic > 0:
            warnings.append(f"speaker {speaker} has no {mic} recordings and was left out")
    return sources, info, warnings


def _read_text(root: Path, speaker: str, utt: str) -> str | None:
    path = root / "txt" / speaker / f"{utt}.txt"
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None  # p315 and a few others have no transcripts
    return " ".join(text.split()) or None
