"""The per-file verbs the command line calls: encode, decode and convert one file, and whose voice.

* :func:`encode_file` (audio -> tokens), :func:`write_token_output` (tokens -> a ``.vqt`` /
  ``.npy`` / ``.txt`` file or stream), :func:`decode_tokens` (tokens -> audio chunks at bounded
  memory), :func:`decode_file` and :func:`convert_file` (-> an audio file or stream, as
  :class:`DecodeOptions` say). Audio is read block by block as the encoder goes
  (:func:`vqspeech.audio.stream_audio`), so encoding's memory is flat in the file's length.
* Whose voice: :func:`decode_speaker` (a named speaker, a reference vector, or the token file's
  own), :func:`voice_tensor` (what the decoders take for it).
* Entropy-coded token files decode with the prior they were coded with
  (:class:`~vqspeech.prior_checkpoint.PriorCheckpoint`); packed ones ignore it.

The model is a :class:`~vqspeech.codec.Codec`; many files at once are :mod:`vqspeech.batch`'s;
describing things for ``vqspeech info`` is :mod:`vqspeech.describe`'s. Outputs go through
:mod:`vqspeech.files` (temp file + rename; streams get the file's exact bytes), decoded audio
chunk by chunk through :func:`vqspeech.audio.write_audio_stream` as the decoder produces it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from vqspeech.audio import stream_audio, write_audio_stream
from vqspeech.codec import ENCODE_CHUNK_FRAMES, Codec
from vqspeech.errors import CheckpointError, ConfigError, ModelMismatchError, TokenFormatError
from vqspeech.files import output, refuse_existing
from vqspeech.prior_checkpoint import PriorCheckpoint, unpack_tokens
from vqspeech.tokens import (
    CodedTokens,
    SpeakerVector,
    TokenFile,
    format_txt,
    load_container,
    write_npy,
    write_tokens,
)


def encode_file(
    codec: Codec,
    path: str | os.PathLike[str],
    *,
    speaker: str | None = None,
    chunk_frames: int | None = ENCODE_CHUNK_FRAMES,
) -> TokenFile:
    """Encode an audio file (any format/rate/channels soundfile reads) to tokens.

    ``speaker`` is the source speaker written to the header (default: :meth:`Codec.infer_speaker`,
    possibly None). A model with a speaker encoder also writes the source's quantised speaker
    vector (``speaker_vector``), so decoding gives back this voice even if the model never heard
    it in training. The file is read block by block as the encoder goes (issue 18): memory is
    flat in the file's length, and the tokens equal encoding :func:`~vqspeech.audio.load_audio`'s
    whole signal. AudioError for a missing, empty, zero-sample, non-audio or NaN/inf file; pure
    silence is fine.
    """
    blocks = stream_audio(path, codec.sample_rate)
    encoded = codec.encode_blocks(blocks, chunk_frames, speaker_vector=codec.has_speaker_encoder)
    source = speaker if speaker is not None else codec.infer_speaker(path)
    return codec.tokens(encoded.codes, encoded.num_samples, source, encoded.speaker_vector)


def write_token_output(
    tokens: TokenFile | CodedTokens,
    target: str | os.PathLike[str] | BinaryIO,
    fmt: str = "vqt",
    *,
    overwrite: bool = False,
) -> None:
    """Write tokens as a token file (``vqt``), a ``.npy`` array or text (``txt``).

    A path is written atomically (temp file + rename); an existing one is replaced only with
    ``overwrite``. A binary stream gets exactly the bytes the file would hold. (For ``jsonl`` see
    :func:`encode_files`.) Entropy-coded tokens only go to a token file.
    """
    if fmt not in ("vqt", "npy", "txt"):
        raise ConfigError(
            f"unknown token output format {fmt!r}; use vqt, npy or txt (jsonl via encode_files)"
        )
    if isinstance(tokens, CodedTokens) and fmt != "vqt":
        raise ConfigError(f"entropy-coded tokens are written as token files (vqt), not {fmt}")

    def write(handle: BinaryIO) -> None:
        if fmt == "vqt" or isinstance(tokens, CodedTokens):
            write_tokens(handle, tokens)
        elif fmt == "npy":
            write_npy(handle, tokens.codes, tokens.header.codebook_size)
        else:
            handle.write(format_txt(tokens.codes).encode("utf-8"))

    with output(target, overwrite, fsync=fmt == "vqt") as handle:
        write(handle)


def check_tokens(
    codec: Codec, tokens: TokenFile | CodedTokens, *, force: bool = False, name: str = "tokens"
) -> None:
    """Raise unless ``codec`` can decode ``tokens`` (only the header is read, so an entropy-coded
    file is checked before its prior decodes it).

    Rates, hop length, codebook size and codebook count must match the model (always); the
    header's ``model_fingerprint`` must equal the model's unless ``force`` (tokens of another
    model decode to noise or worse, so this is refused by default: ModelMismatchError).
    """
    h = tokens.header
    mine = (codec.sample_rate, codec.hop_length, codec.codebook_size, 1)
    theirs = (h.sample_rate, h.hop_length, h.codebook_size, h.n_codebooks)
    if theirs != mine:
        raise ModelMismatchError(
            f"{name}: tokens are {h.sample_rate} Hz, hop {h.hop_length}, {h.n_codebooks} x {h.codebook_size} "
            f"codes but the model is {mine[0]} Hz, hop {mine[1]}, 1 x {mine[2]} codes; decode them with the "
            "model that made them"
        )
    if h.model_fingerprint != codec.fingerprint and not force:
        raise ModelMismatchError(
            f"{name}: tokens were made by model {h.model_fingerprint}, not by this one "
            f"({codec.fingerprint}); decode with that model, or pass --force to decode anyway"
        )
    if h.num_samples > h.n_frames * h.hop_length:
        raise TokenFormatError(
            f"{name}: header says {h.num_samples} samples but {h.n_frames} frames hold only "
            f"{h.n_frames * h.hop_length}; the file is corrupt"
        )


#: Whom to decode as: a named speaker of the model's table, or a (quantised) speaker vector.
Voice = str | SpeakerVector


def _check_voice_choice(speaker: str | None, reference: object) -> None:
    if speaker is not None and reference:
        raise ConfigError("give a target speaker or a reference recording, not both")


def decode_speaker(
    codec: Codec,
    tokens: TokenFile,
    speaker: str | None = None,
    *,
    reference: SpeakerVector | None = None,
    name: str = "tokens",
) -> Voice:
    """The voice to decode with, first that applies:

    1. ``speaker`` (a name the model must know) or ``reference`` (a vector from
       :meth:`Codec.reference_vector`); not both;
    2. the header's ``speaker_vector`` (the source's voice, seen in training or not), when the
       model has a speaker encoder;
    3. the header's ``speaker`` (token files without a vector, e.g. from older models).

    CheckpointError when none applies: no vector, and the header names no speaker or one the
    model does not know; CheckpointError for a ``speaker`` the model does not know.
    """
    voice = _choose_voice(codec, tokens, speaker, reference, name)
    voice_tensor(codec, voice)  # a name the model knows, a vector of its size
    return voice


def _choose_voice(
    codec: Codec, tokens: TokenFile, speaker: str | None, reference: SpeakerVector | None, name: str
) -> Voice:
    """:func:`decode_speaker`'s choice, leaving a given ``speaker`` or ``reference`` to
    :func:`voice_tensor` to check (the one check when the voice is used)."""
    _check_voice_choice(speaker, reference)
    if speaker is not None:
        return speaker
    if reference is not None:
        return reference
    vector = tokens.header.speaker_vector
    if vector is not None and codec.has_speaker_encoder:
        return vector
    source = tokens.header.speaker
    known = ", ".join(codec.speaker_names)
    if source is None:
        raise CheckpointError(
            f"{name}: the tokens do not say who spoke; pass --speaker NAME (known: {known})"
        )
    if source not in codec.speaker_names:
        raise CheckpointError(
            f"{name}: source speaker {source!r} is not one this model knows; "
            f"pass --speaker NAME (known: {known})"
        )
    return source


def decode_tokens(
    codec: Codec,
    tokens: TokenFile,
    speaker: Voice,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    decoder: str | None = None,
    chunk_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Generate audio for ``tokens`` in ``speaker``'s voice: float32 chunks ``[n]`` at the model rate.

    ``speaker`` is a name from the model's table or a :class:`~vqspeech.tokens.SpeakerVector`
    (its dequantised values are the decoders' global conditioning).

    The chunks, concatenated, are exactly ``num_samples`` long and equal one-shot decoding: the
    sampling noise comes from a generator seeded with ``seed`` (same tokens, speaker, seed and
    temperature -> the same audio, whatever ``chunk_frames`` is). ``temperature=0`` is greedy.
    ``decoder`` picks the decoder family (default: the model's first; the spectrogram family's
    Griffin-Lim phases come from the same seeded generator). Call :func:`check_tokens` first.
    Memory follows ``chunk_frames`` (default: the family's
    :attr:`~vqspeech.decoders.DecoderFamily.chunk_frames`), not the file's length.
    """
    family = codec.check_decoder(decoder)
    sid = voice_tensor(codec, speaker)
    n = tokens.header.num_samples
    return _chunks(codec, tokens.codes, n, sid, family, seed, temperature, chunk_frames)


def _chunks(
    codec: Codec,
    codes: np.ndarray,
    remaining: int,
    sid: torch.Tensor,
    family: str,
    seed: int,
    temperature: float,
    chunk_frames: int | None,
) -> Iterator[np.ndarray]:
    """:func:`decode_tokens`'s chunks for codes ``[1, F]`` and a checked voice ``sid`` and family."""
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    codes_t = torch.from_numpy(codes).to(codec.device)
    step = chunk_frames or codec.model.families[family].chunk_frames
    for chunk in codec.model.iter_decode(
        codes_t, sid, temperature, generator, step, family, codec.decode_dtype
    ):
        piece = chunk[0, :remaining].float().cpu().numpy()
        remaining -= piece.shape[0]
        if piece.shape[0]:
            yield piece


def voice_tensor(codec: Codec, voice: Voice) -> torch.Tensor:
    """What the model's decoders take for ``voice``: speaker id ``[1]`` (int64) or vector ``[1, D]``."""
    if isinstance(voice, str):
        return torch.tensor([codec.speaker_id(voice)], device=codec.device)
    dim = codec.model.config.speaker_dim
    if len(voice.codes) != dim:
        raise ModelMismatchError(
            f"the speaker vector has {len(voice.codes)} values but this model's speakers have {dim}; "
            "use the model that made it"
        )
    return torch.from_numpy(voice.values).to(codec.device)[None]


ProgressFn = Callable[[float, float], None]
"""``(seconds_done, seconds_total)`` of the file in progress; called from the working thread."""


@dataclass(frozen=True)
class DecodeOptions:
    """How a file is decoded to audio (:func:`decode_file`, :func:`convert_file` and their batches).

    ``speaker`` (a name the model knows) or ``reference`` (a voice from
    :meth:`Codec.reference_vector`), not both: whose voice; ``seed`` and ``temperature``: the
    sampling (see :func:`decode_tokens`); ``sample_rate``: the output's rate (default the
    model's); ``decoder``: the decoder family (default the model's first); ``overwrite``: replace
    an existing output; ``chunk_frames``: latent frames per decoder push (bounds memory; default
    the family's own).
    """

    speaker: str | None = None
    reference: SpeakerVector | None = None
    seed: int = 0
    temperature: float = 1.0
    sample_rate: int | None = None
    decoder: str | None = None
    overwrite: bool = False
    chunk_frames: int | None = None


def _write_decoded(
    codec: Codec,
    codes: np.ndarray,
    num_samples: int,
    sid: torch.Tensor,
    family: str,
    options: DecodeOptions,
    target: str | os.PathLike[str] | BinaryIO,
    on_progress: ProgressFn | None,
) -> float:
    """Decode codes ``[1, F]`` (a checked voice ``sid`` and ``family``) chunk by chunk straight into
    :func:`~vqspeech.audio.write_audio_stream` (the target was checked for an existing file
    before the work); returns the audio's seconds."""
    o = options
    chunks = _chunks(codec, codes, num_samples, sid, family, o.seed, o.temperature, o.chunk_frames)
    rate = codec.sample_rate
    report = None if on_progress is None else (lambda done: on_progress(done / rate, num_samples / rate))
    write_audio_stream(chunks, target, rate, out_rate=o.sample_rate, overwrite=True, on_chunk=report)
    return num_samples / rate


def decode_file(
    codec: Codec,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str] | BinaryIO,
    options: DecodeOptions | None = None,
    *,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    prior: PriorCheckpoint | None = None,
) -> float:
    """Decode token file ``source`` to audio ``target`` (path or binary stream); returns seconds.

    ``options`` (default :class:`DecodeOptions` ()): the voice (default: the header's speaker
    vector, else its named speaker; see :func:`decode_speaker`), sampling, output rate, decoder
    family, overwriting. ``force`` decodes tokens of another model. An entropy-coded file needs
    ``prior``, the one it was coded with (ConfigError / ModelMismatchError naming it otherwise);
    a packed file ignores it. See :func:`check_tokens`, :func:`decode_speaker`,
    :func:`decode_tokens`.
    """
    o = options or DecodeOptions()
    name = str(source)
    if isinstance(target, (str, os.PathLike)):
        refuse_existing(Path(target), o.overwrite)  # before the work; the writer does not ask again
    container = load_container(source)
    check_tokens(codec, container, force=force, name=name)
    tokens = unpack_tokens(container, prior, name)
    sid = voice_tensor(codec, _choose_voice(codec, tokens, o.speaker, o.reference, name))
    family = codec.check_decoder(o.decoder)
    return _write_decoded(codec, tokens.codes, tokens.header.num_samples, sid, family, o, target, on_progress)


def convert_file(
    codec: Codec,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str] | BinaryIO,
    options: DecodeOptions | None = None,
    *,
    encode_chunk_frames: int | None = ENCODE_CHUNK_FRAMES,
    on_progress: ProgressFn | None = None,
) -> float:
    """Voice conversion: encode audio file ``source``, decode it as ``options.speaker`` (a named
    speaker) or as the voice of ``options.reference`` (from :meth:`Codec.reference_vector`) to
    ``target``.

    Exactly one of the two (ConfigError otherwise). Equals :func:`encode_file` then
    :func:`decode_file` with the same ``options``. The source is encoded block by block as it
    is read (:meth:`Codec.encode_blocks`), so memory is flat in its length. Returns the audio's
    duration in seconds.
    """
    o = options or DecodeOptions()
    sid = voice_tensor(codec, _target_voice(o.speaker, o.reference))
    family = codec.check_decoder(o.decoder)
    if isinstance(target, (str, os.PathLike)):
        refuse_existing(Path(target), o.overwrite)  # before the work; the writer does not ask again
    # Only the codes: the source's speaker vector and header would be thrown away here.
    encoded = codec.encode_blocks(stream_audio(source, codec.sample_rate), encode_chunk_frames)
    return _write_decoded(codec, encoded.codes, encoded.num_samples, sid, family, o, target, on_progress)


def _target_voice(speaker: str | None, reference: SpeakerVector | None) -> Voice:
    """The one target voice of a conversion: ``speaker`` or a ``reference`` vector (exactly one;
    :func:`voice_tensor` checks it)."""
    _check_voice_choice(speaker, reference)
    if speaker is not None:
        return speaker
    if reference is None:
        raise ConfigError("voice conversion needs a target: a speaker name or a reference recording")
    return reference


def batch_voice(
    codec: Codec,
    options: DecodeOptions,
    recordings: Sequence[str | os.PathLike[str]] = (),
    *,
    required: bool,
) -> DecodeOptions:
    """Check a batch's voice once, before any input runs; ``options`` with ``reference`` set to
    the voice of ``recordings`` (read and averaged once, :meth:`Codec.reference_vector`) when
    they are given.

    ``options.speaker``, ``options.reference`` (a vector already at hand) or ``recordings``:
    at most one (ConfigError). ``required``: conversion needs a target (a known speaker or a
    reference); decoding may fall back on each token file's own voice.
    """
    if recordings and options.reference is not None:
        raise ConfigError("give reference recordings or a reference vector, not both")
    _check_voice_choice(options.speaker, recordings or options.reference)
    vector = codec.reference_vector(recordings) if recordings else options.reference
    if required:
        voice_tensor(codec, _target_voice(options.speaker, vector))
    elif options.speaker is not None:
        codec.speaker_id(options.speaker)
    return replace(options, reference=vector)
