"""The one place that reads and writes audio files (soundfile for the bytes, soxr for rates).

:func:`load_audio` reads anything libsndfile reads (WAV, FLAC, OGG/Vorbis, ...), at any
sample rate and channel count, and returns mono float32 ``[T]`` at the requested
``sample_rate`` (default 16000 Hz): channels are averaged, the rate is converted with soxr
at high quality (the ``soxr_hq`` resampler that librosa uses). :func:`stream_audio` gives the
same signal block by block, for work whose memory must not follow the file's length.
:func:`read_int16` reads a slice of a file's samples as stored (the data cache's 16-bit copies).

:func:`save_audio` writes a whole signal; :func:`write_audio_stream` writes one chunk by
chunk as a decoder produces it, resampled on the way. Both write through
:mod:`vqspeech.files` (a temp file in the target's folder, renamed over it), so a reader never
sees a half-written file and an existing file is replaced only on success.

Reading failures are :class:`~vqspeech.errors.AudioError` s whose message names the file and
says what to do. This module imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from vqspeech.errors import AudioError, OutputError
from vqspeech.files import AtomicFile, output, target_label

#: What :func:`load_audio` and :func:`save_audio` accept: a path or a binary file object.
AudioTarget = str | os.PathLike[str] | BinaryIO

#: File extension -> (libsndfile format, default subtype) for :func:`save_audio`.
FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}

#: File extensions that :func:`is_audio_file` accepts (lower case, with the dot).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg"})


def is_audio_file(path: str | os.PathLike[str]) -> bool:
    """True for a visible file whose extension is a supported audio format (``.wav/.flac/.ogg``).

    Hidden files (``.DS_Store``, macOS ``._name.wav`` resource forks) are never audio.
    """
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS


def resample(audio: np.ndarray, orig_sample_rate: int, sample_rate: int) -> np.ndarray:
    """Mono float32 ``[T]`` at ``orig_sample_rate`` -> float32 ``[T']`` at ``sample_rate`` (soxr HQ).

    ``T' = ceil(T * sample_rate / orig_sample_rate)``; returns the input unchanged when the
    rates are equal.
    """
    if orig_sample_rate <= 0 or sample_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sample_rate} -> {sample_rate}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if orig_sample_rate == sample_rate:
        return audio
    out = soxr.resample(audio, orig_sample_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def _name(source: AudioTarget) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<file object>"))


def audio_info(source: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(frames, sample_rate, channels)`` of an audio file, read from its header only."""
    path = Path(source)
    _check_path(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(
            f"{path}: not a readable audio file ({_reason(exc)}); convert it to WAV or FLAC"
        ) from None
    return int(info.frames), int(info.samplerate), int(info.channels)


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such audio file; check the path")
    if not path.is_file():
        raise AudioError(f"{path}: is not a file; give the path of a WAV, FLAC or OGG file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes); re-export or remove it")
    try:
        path.open("rb").close()  # libsndfile would call a permission problem "System error."
    except OSError as exc:
        raise AudioError(
            f"{path}: cannot read the file ({exc.strerror or _reason(exc)}); check its permissions"
        ) from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


#: Input sample rates :func:`load_audio` accepts, in Hz. Below 4 kHz a file cannot hold speech
#: (its band would end under 2 kHz; telephone audio, the lowest rate in use, is 8 kHz), and the
#: header's rate sets how many output samples each input sample becomes: a few-KB file claiming
#: 1 Hz would ask for gigabytes at 16 kHz. 768 kHz is the highest rate audio hardware records.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 768000
#: Input frames read (and resampled) at a time, so memory follows the output, not the input.
_BLOCK_FRAMES = 1 << 16


def _check_rate(rate: int, name: str) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, the "
            "rates speech is recorded at; the header is corrupt, or resample the file first"
        )


def load_audio(source: AudioTarget, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file (path or binary file object) -> mono float32 ``[T]`` at ``sample_rate`` Hz.

    Integer PCM is scaled to [-1, 1); channels are averaged; other rates are converted with
    soxr HQ, block by block (equal to converting the whole signal at once), so the memory taken
    is about the output's. Pure silence is valid. The blocks of :func:`stream_audio`, joined.
    Raises :class:`AudioError` for a missing or empty file, bytes that are not audio, a sample
    rate outside [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`], a file with zero samples or
    too short to make one sample at ``sample_rate``, or NaN/inf samples.
    """
    parts = list(stream_audio(source, sample_rate))
    audio = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return np.ascontiguousarray(audio, dtype=np.float32)


def stream_audio(
    source: AudioTarget, sample_rate: int = 16000, *, block_frames: int = _BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """:func:`load_audio`'s signal in consecutive non-empty float32 blocks ``[n]``, read as they are used.

    Joined, the blocks equal :func:`load_audio` exactly (soxr's stream resampler carries its
    state across blocks). Each block comes from ``block_frames`` input frames (about
    ``block_frames * sample_rate / file rate`` samples), so memory follows the block, not the
    file. A generator: nothing is read before the first block is asked for, and the
    :class:`AudioError` s of :func:`load_audio` are raised while iterating (a NaN late in the
    file after the blocks before it; zero samples / too short at the end).
    """
    if block_frames < 1:
        raise ValueError(f"block_frames must be positive, got {block_frames}")
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        _check_path(Path(source))
        opened: str | BinaryIO = os.fspath(source)
    else:
        opened = source
    frames = 0
    produced = 0
    try:
        with sf.SoundFile(opened) as handle:
            orig_rate = int(handle.samplerate)
            _check_rate(orig_rate, name)
            resampler = (
                soxr.ResampleStream(orig_rate, sample_rate, 1, dtype="float32", quality="HQ")
                if orig_rate != sample_rate
                else None
            )
            for block in handle.blocks(block_frames, dtype="float32", always_2d=True):
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy()
                del block
                if not np.isfinite(mono).all():
                    raise AudioError(
                        f"{name}: the file holds NaN or infinite samples; re-export it as PCM or remove it"
                    )
                frames += mono.shape[0]
                piece = resampler.resample_chunk(mono) if resampler is not None else mono
                if piece.shape[0]:
                    produced += piece.shape[0]
                    yield np.ascontiguousarray(piece, dtype=np.float32)
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                if tail.shape[0]:
                    produced += tail.shape[0]
                    yield np.ascontiguousarray(tail, dtype=np.float32)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise AudioError(
            f"{name}: not a readable audio file ({_reason(exc)}); convert it to WAV or FLAC"
        ) from None
    except OSError as exc:
        raise AudioError(f"{name}: cannot read the file ({_reason(exc)}); check its permissions") from None
    if frames == 0:
        raise AudioError(f"{name}: the file holds no samples; re-export or remove it")
    if produced == 0:
        raise AudioError(
            f"{name}: too short: {frames} sample(s) at {orig_rate} Hz make no sample at {sample_rate} Hz; "
            "remove it or give a longer recording"
        )


def save_audio(
    target: AudioTarget,
    audio: np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
    format: str | None = None,
    *,
    fsync: bool = False,
) -> None:
    """Write mono audio ``[T]`` (float in [-1, 1]; clipped for PCM) at ``sample_rate`` Hz.

    For a path, the format comes from the extension (``.wav`` -> 16-bit PCM WAV, ``.flac``
    -> 16-bit FLAC, ``.ogg`` -> Vorbis; ``subtype`` overrides the encoding) and the write
    is atomic: a temporary file in the same folder is renamed over the target, so an
    existing file is replaced only when the new one is complete. For a file object,
    ``format`` (default ``"WAV"``) says the container. ``fsync``: flush the file to disk
    before the rename (the data cache's copies).
    """
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise AudioError(f"save_audio expects mono audio [T], got shape {tuple(samples.shape)}")
    if sample_rate <= 0:
        raise AudioError(f"sample_rate must be positive, got {sample_rate}")
    if not np.isfinite(samples).all():
        raise AudioError("audio holds NaN or infinite samples; nothing was written")

    if not isinstance(target, (str, os.PathLike)):
        fmt = (format or "WAV").upper()
        sub = subtype or {f: s for f, s in FORMATS.values()}.get(fmt)
        _write(target, samples, sample_rate, fmt, sub)
        return

    path = Path(target)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise AudioError(f"{path}: unknown audio extension {suffix!r}; use one of {known}")
    fmt, default_subtype = FORMATS[suffix]
    if not path.parent.is_dir():
        raise AudioError(f"{path}: folder {path.parent} does not exist; create it first")
    with AtomicFile(path, "audio", fsync=fsync, mkdir=False) as out:
        _write(out.handle, samples, sample_rate, fmt, subtype or default_subtype)


def _write(
    target: str | BinaryIO, samples: np.ndarray, sample_rate: int, fmt: str, subtype: str | None
) -> None:
    if subtype is not None and subtype.upper().startswith("PCM"):
        # libsndfile wraps around on overflow when converting float to int: clip first.
        samples = np.clip(samples, -1.0, 1.0)
    try:
        sf.write(target, samples, sample_rate, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(
            f"{_name(target)}: cannot write {fmt}/{subtype} audio ({_reason(exc)}); check free space "
            "and permissions"
        ) from None
    except OSError as exc:
        raise AudioError(
            f"{_name(target)}: cannot write the file ({_reason(exc)}); check free space and permissions"
        ) from None


def read_int16(source: str | os.PathLike[str], start: int = 0, stop: int | None = None) -> np.ndarray:
    """Samples ``[start, stop)`` of a mono audio file as stored, int16 ``[n]`` (no resampling).

    For 16-bit files (the data cache's copies) these are the exact stored values. AudioError
    if the file cannot be read.
    """
    try:
        data, _ = sf.read(os.fspath(source), start=start, stop=stop, dtype="int16", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{os.fspath(source)}: not readable audio ({_reason(exc)})") from None
    return np.asarray(data, dtype=np.int16)


def write_audio_stream(
    chunks: Iterable[np.ndarray],
    target: AudioTarget,
    sample_rate: int,
    *,
    out_rate: int | None = None,
    overwrite: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Write float chunks ``[n]`` at ``sample_rate`` to ``target`` as they come, resampled to ``out_rate``.

    The format comes from a path's extension (:data:`FORMATS`: 16-bit WAV/FLAC, Vorbis); a
    binary stream gets WAV (written whole when finished, see :func:`vqspeech.files.output`).
    Resampling is streamed (soxr), equal to resampling the whole signal. ``on_chunk(n)`` is
    called with the input samples consumed so far. OutputError for an unknown extension, an
    existing path (unless ``overwrite``) or a failed write.
    """
    path = Path(os.fspath(target)) if isinstance(target, (str, os.PathLike)) else None
    suffix = path.suffix.lower() if path is not None else ".wav"
    if path is not None and suffix not in FORMATS:
        raise OutputError(
            f"{path}: unknown output extension {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}"
        )
    fmt, subtype = FORMATS[suffix]
    rate = out_rate or sample_rate
    resampler = (
        soxr.ResampleStream(sample_rate, rate, 1, dtype="float32", quality="HQ")
        if rate != sample_rate
        else None
    )
    pcm = subtype.startswith("PCM")
    done = 0
    with output(target, overwrite) as handle:
        try:
            with sf.SoundFile(handle, "w", samplerate=rate, channels=1, format=fmt, subtype=subtype) as out:
                for chunk in chunks:
                    done += chunk.shape[0]
                    piece = resampler.resample_chunk(chunk) if resampler is not None else chunk
                    # libsndfile wraps around on overflow when converting float to int: clip first.
                    out.write(np.clip(piece, -1.0, 1.0) if pcm else piece)
                    if on_chunk is not None:
                        on_chunk(done)
                if resampler is not None:
                    tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                    out.write(np.clip(tail, -1.0, 1.0) if pcm else tail)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise OutputError(
                f"{target_label(target)}: cannot write {fmt} audio "
                f"({' '.join(str(exc).split())}); check free space"
            ) from None
