"""Speaker encoder (issue 7): voices from recordings, in token files, on the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import make_checkpoint, tiny_recipe, tone, write_tone
from typer.testing import CliRunner

from vqspeech.batch import Task, convert_files
from vqspeech.checkpoint import load_checkpoint, model_fingerprint
from vqspeech.codec import Codec
from vqspeech.config import SpeakerEncoderConfig, load_recipe, recipe_from_dict
from vqspeech.data.batches import StepBatches
from vqspeech.describe import describe_tokens
from vqspeech.errors import ConfigError, TokenFormatError
from vqspeech.features import mel_basis, mel_frequencies
from vqspeech.inference import DecodeOptions, decode_tokens, encode_file
from vqspeech.model import VQVAE
from vqspeech.nn.speaker import PITCH_CENTRE, PITCH_OCTAVES, log2_f0_sums
from vqspeech.recipe_io import to_dict
from vqspeech.tokens import SPEAKER_VECTOR_KEY, SpeakerVector, TokenFile, TokenHeader, dumps, loads
from vqspeech_cli.main import app

#: A speaker encoder small enough for tests.
SPEAKER_ENCODER = [
    "model.speaker_encoder.enabled=true",
    "model.speaker_encoder.channels=8",
    "model.speaker_encoder.layers=1",
    "model.speaker_encoder.reference_seconds=0.128",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("se") / "se.pt", extra=SPEAKER_ENCODER)


@pytest.fixture(scope="module")
def codec(ckpt: Path) -> Codec:
    return Codec.load(ckpt, "cpu")


def _decoded(codec: Codec, tokens: TokenFile, voice: str | SpeakerVector) -> np.ndarray:
    return np.concatenate(list(decode_tokens(codec, tokens, voice, seed=0)))


# --------------------------------------------------------------------------------------------
# Config and model


def test_off_by_default_and_older_checkpoints_load_with_unchanged_fingerprints() -> None:
    recipe = load_recipe("paper")
    assert not recipe.model.speaker_encoder.enabled and not VQVAE(recipe.model).has_speaker_encoder
    saved = to_dict(recipe)
    # a checkpoint written before these options existed
    del saved["model"]["speaker_encoder"]
    del saved["model"]["spectrogram"]["frame_stride"]
    del saved["model"]["spectrogram"]["phase_init"]
    del saved["model"]["spectrogram"]["vocoder"]
    del saved["model"]["spectrogram"]["harmonic_max_hz"]
    del saved["model"]["spectrogram"]["pitch_detach"]
    del saved["model"]["code_adversary"]
    del saved["model"]["families"]
    assert recipe_from_dict(saved) == recipe
    torch.manual_seed(0)
    state = VQVAE(recipe.model).state_dict()
    digest = hashlib.sha256(json.dumps(saved["model"], sort_keys=True).encode())
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(name.encode() + str(tensor.dtype).encode() + tensor.view(torch.uint8).numpy().tobytes())
    assert model_fingerprint(recipe, state) == digest.hexdigest()[:16]
    with pytest.raises(ConfigError, match="vector_bits"):
        load_recipe("demo", ["model.speaker_encoder.vector_bits=0"])


def test_an_older_checkpoint_gets_the_as_before_value_of_a_field_it_lacks(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "se.pt", extra=SPEAKER_ENCODER)
    payload = torch.load(path, weights_only=True)
    assert payload["recipe"]["model"]["speaker_encoder"]["envelope"]  # today's default: on
    fingerprint = load_checkpoint(path).fingerprint
    del payload["recipe"]["model"]["speaker_encoder"]["envelope"]  # written before the option
    del payload["content_sha256"]  # and before checkpoints carried a digest
    payload["model"] = VQVAE(
        tiny_recipe(3, *SPEAKER_ENCODER, "model.speaker_encoder.envelope=false").model
    ).state_dict()
    torch.save(payload, path)
    # the value filled in is the "as before" one (off), not the dataclass default (on): a model
    # trained without the envelope must not be decoded as if it had one
    old = load_checkpoint(path)
    assert SpeakerEncoderConfig().envelope and not old.recipe.model.speaker_encoder.envelope
    assert old.fingerprint != fingerprint
    Codec.load(path)  # and it builds and loads


def test_speaker_vector_is_bounded_deterministic_and_leaves_the_codes_alone() -> None:
    torch.manual_seed(0)
    model = VQVAE(tiny_recipe(3, *SPEAKER_ENCODER).model).eval()
    audio = torch.from_numpy(np.stack([tone(0.256, f0=f0, seed=i) for i, f0 in enumerate((120, 240))]))
    a, b = model.encode_speaker(audio), model.encode_speaker(audio)
    assert a.shape == (2, 8) and torch.equal(a, b) and a.abs().max() <= 1.0
    assert model.encode_speaker(audio[:, :10]).isfinite().all()  # shorter than one STFT window
    # a louder recording of the same voice gives (nearly) the same vector
    assert torch.allclose(model.encode_speaker(audio * 0.3), a, atol=1e-4)
    # chunked pooling of a long recording stays deterministic
    long = audio[:1].repeat(1, 4)
    assert torch.equal(model.speaker_encoder(long, chunk_samples=1024), model.speaker_encoder(long, 1024))
    speaker = torch.tensor([0, 1])
    first = model(audio, speaker, reference=audio)
    swapped = model(audio, speaker, reference=audio.flip(0))
    assert torch.equal(first.codes, swapped.codes)  # the reference changes the voice only
    assert first.spectrogram is None and not torch.equal(first.logits, swapped.logits)
    assert first.speaker_loss is not None and torch.isfinite(first.loss)
    assert model(audio, speaker).speaker_loss is None  # no reference: the table's voice


def test_training_batches_carry_a_reference_from_another_utterance(demo_corpus) -> None:
    plain = StepBatches(demo_corpus, tiny_recipe(3, "data.segment_seconds=0.064"))
    batches = StepBatches(demo_corpus, tiny_recipe(3, "data.segment_seconds=0.064", *SPEAKER_ENCODER))
    audio, speakers, reference = batches.batch(3)
    assert reference.shape == (audio.shape[0], 2048)
    assert torch.equal(audio, plain.batch(3)[0]) and torch.equal(speakers, plain.batch(3)[1])
    again = batches.batch(3)
    assert torch.equal(reference, again[2])  # a pure function of the step
    crops = batches._steps.crops
    rng = np.random.default_rng(0)
    for index in range(len(crops.speaker_ids)):
        ref = crops.reference(index, 2048, rng)
        whole = crops.store.read(index)
        starts = np.flatnonzero(whole[: max(1, len(whole) - 2047)] == ref[0])
        own = any(np.array_equal(ref, whole[s : s + 2048]) for s in starts)
        assert not own  # never a crop of the utterance being reconstructed


def test_envelope_off_changes_nothing_and_on_the_decoder_adds_the_references_envelope() -> None:
    spectrogram = [*SPEAKER_ENCODER, "model.decoders=[spectrogram]", "model.spectrogram.vocoder=griffin_lim"]
    off = tiny_recipe(3, *spectrogram, "model.speaker_encoder.envelope=false")
    assert not off.model.speaker_encoder.envelope
    torch.manual_seed(0)
    state = VQVAE(off.model).state_dict()
    saved = to_dict(off)["model"]
    del saved["speaker_encoder"]["envelope"]  # a checkpoint written before the flag existed
    del saved["speaker_encoder"]["pitch"]
    del saved["spectrogram"]["vocoder"]
    del saved["spectrogram"]["harmonic_max_hz"]
    del saved["code_adversary"]
    del saved["families"]
    digest = hashlib.sha256(json.dumps(saved, sort_keys=True).encode())
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(name.encode() + str(tensor.dtype).encode() + tensor.view(torch.uint8).numpy().tobytes())
    assert model_fingerprint(off, state) == digest.hexdigest()[:16]
    assert not any("envelope" in name for name in state)

    torch.manual_seed(0)
    model = VQVAE(tiny_recipe(3, *spectrogram, "model.speaker_encoder.envelope=true").model).eval()
    e = model.envelope_dims
    assert e == 4 and model.speaker_vector(torch.tensor([0, 1, 2]))[:, -e:].abs().max() == 0  # flat at first
    assert tiny_recipe(3, *spectrogram).model.speaker_encoder.envelope  # on by default
    films = [m for m in model.spectrogram_decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert films
    for film in films:  # the FiLM layers: leave only the envelope path to the voice
        torch.nn.init.zeros_(film.weight)
        torch.nn.init.zeros_(film.bias)
    flat = torch.from_numpy(tone(0.512, seed=3))
    tilted = torch.cat([flat[:1], flat[1:] - 0.95 * flat[:-1]])  # pre-emphasis: highs up ~+4 (log) vs lows
    voices = model.encode_speaker(torch.stack([flat, tilted]))
    assert voices.abs().max() <= 1.0 and voices[1, -e] < voices[0, -e]  # c_1 falls as the highs rise
    audio = torch.from_numpy(tone(0.256, seed=4))[None].repeat(2, 1)
    codes = model.encode(audio)
    log_mag = model.spectrogram_decoder(model.quantizer.lookup(codes), voices)  # [2, bins, F]
    change = (log_mag[1] - log_mag[0]).mean(dim=1)  # [bins]: the same codes, another voice
    expected = model.spectrogram_decoder.get_buffer("envelope_map") @ (voices[1, -e:] - voices[0, -e:])
    assert torch.allclose(change, expected, atol=1e-4)
    bins = change.shape[0]
    assert change[-bins // 4 :].mean() - change[: bins // 8].mean() > 1.0  # the tilt comes through
    trained = model.train()(audio, torch.tensor([0, 1]), reference=torch.stack([flat, tilted]))
    assert trained.speaker_loss is not None and torch.isfinite(trained.loss)


# --------------------------------------------------------------------------------------------
# Token files


@pytest.mark.parametrize("f0", [65.0, 110.0, 180.0, 260.0, 390.0])
def test_yin_pitch_finds_the_fundamental_of_a_voice_like_tone(f0: float) -> None:
    audio = torch.from_numpy(np.stack([tone(0.5, f0=f0, seed=1), np.zeros(8000, np.float32)]))
    voiced, log2_f0 = log2_f0_sums(audio, 16000, 160)
    assert voiced[0] >= 40 and voiced[1] == 0  # ~47 frames of tone; silence is never voiced
    assert float(2 ** (log2_f0[0] / voiced[0])) == pytest.approx(f0, rel=0.01)


def test_the_pitch_entry_is_measured_and_an_octave_apart_for_voices_an_octave_apart() -> None:
    torch.manual_seed(0)
    recipe = tiny_recipe(3, *SPEAKER_ENCODER, "model.speaker_encoder.pitch=true")
    model = VQVAE(recipe.model).eval()
    assert model.measured_dims == model.envelope_dims + 1 == 5
    assert model.speaker_vector(torch.tensor([0, 1, 2]))[:, -5:].abs().max() == 0  # table: neutral
    low, high = tone(0.5, f0=110, seed=2), tone(0.5, f0=220, seed=3)
    voices = model.encode_speaker(torch.from_numpy(np.stack([low, high, np.zeros_like(low)])))
    pitch = voices[:, -5]  # just before the four envelope entries
    assert float(pitch[1] - pitch[0]) == pytest.approx(1.0 / PITCH_OCTAVES, abs=0.01)
    assert float(pitch[0]) == pytest.approx(math.log2(110 / PITCH_CENTRE) / PITCH_OCTAVES, abs=0.01)
    assert pitch[2] == 0  # nothing voiced: the centre
    # a long recording, read in chunks, gives the pitch of the whole
    long = torch.from_numpy(np.concatenate([low] * 6))[None]
    assert model.speaker_encoder is not None
    with torch.no_grad():
        chunked = model.speaker_encoder(long, chunk_samples=16000)
    assert float(chunked[0, -5]) == pytest.approx(float(pitch[0]), abs=0.01)


def test_header_vector_round_trips_bit_exactly_and_counts_in_the_bitrate(tmp_path: Path) -> None:
    vector = SpeakerVector.quantize(np.linspace(-1.2, 1.0, 32), bits=8)
    assert vector.codes[0] == 0 and vector.codes[-1] == 255 and vector.n_bits == 256
    assert np.array_equal(SpeakerVector.quantize(vector.values, 8).codes, vector.codes)  # on the grid
    header = TokenHeader(
        sample_rate=16000,
        hop_length=64,
        codebook_size=512,
        n_codebooks=1,
        n_frames=250,
        num_samples=16000,
        speaker=None,
        model_fingerprint="f",
        extra={SPEAKER_VECTOR_KEY: vector.to_json()},
    )
    tokens = TokenFile(header, np.zeros((1, 250), np.int64))
    data = dumps(tokens)
    back = loads(data)
    assert back.header.speaker_vector == vector and dumps(back) == data
    assert np.array_equal(back.header.speaker_vector.values, vector.values)
    path = tmp_path / "x.vqt"
    path.write_bytes(data)
    info = describe_tokens(path)
    assert info.speaker_vector_bits == 256 and info.bitrate == 250 * 9 + 256
    for bad in ({"bits": 8, "codes": [256]}, {"bits": 0, "codes": [0]}, [1, 2], {"bits": 8, "codes": []}):
        odd = dataclasses.replace(header, extra={SPEAKER_VECTOR_KEY: bad})
        with pytest.raises(TokenFormatError, match="speaker_vector"):
            _ = odd.speaker_vector


# --------------------------------------------------------------------------------------------
# Inference and the command line


def test_encode_stores_the_voice_and_decode_gives_it_back(tmp_path: Path, codec: Codec) -> None:
    source = write_tone(tmp_path / "new_voice.wav", 0.3, f0=130)
    tokens = encode_file(codec, source)
    vector = tokens.header.speaker_vector
    assert tokens.header.speaker is None and vector is not None and len(vector.codes) == 8
    assert encode_file(codec, source).header == tokens.header  # deterministic
    out = tmp_path / "back.wav"
    vqt = tmp_path / "new_voice.vqt"
    vqt.write_bytes(dumps(tokens))
    result = CliRunner().invoke(app, ["decode", str(vqt), "-m", str(codec.checkpoint.path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    audio, _ = sf.read(out, dtype="float32")
    assert np.allclose(audio, _decoded(codec, tokens, vector), atol=1 / 32768 + 1e-6)


def test_swapping_the_reference_changes_the_voice_not_the_codes(tmp_path: Path, codec: Codec) -> None:
    source = write_tone(tmp_path / "s01_001.wav", 0.3, f0=180)
    low = write_tone(tmp_path / "low.wav", 0.4, f0=90, seed=1)
    high = write_tone(tmp_path / "high.wav", 0.4, f0=330, seed=2)
    a, b = codec.reference_vector([low]), codec.reference_vector([high])
    assert a != b and codec.reference_vector([low]) == a
    both = codec.reference_vector([low, high])  # several references: the mean of their vectors
    mean = (codec.model.encode_speaker(torch.from_numpy(tone(0.4, f0=90, seed=1))[None]) +
            codec.model.encode_speaker(torch.from_numpy(tone(0.4, f0=330, seed=2))[None])) / 2  # fmt: skip
    assert both == SpeakerVector.quantize(mean[0].numpy(), 8)
    tokens = encode_file(codec, source)
    assert not np.allclose(_decoded(codec, tokens, a), _decoded(codec, tokens, b))
    runner = CliRunner()
    model = ["-m", str(codec.checkpoint.path)]
    outs = {}
    for ref in (low, high):
        outs[ref] = tmp_path / f"conv_{ref.stem}.wav"
        result = runner.invoke(app, ["convert", str(source), *model, "-r", str(ref), "-o", str(outs[ref])])
        assert result.exit_code == 0, result.output
    assert not np.array_equal(sf.read(outs[low])[0], sf.read(outs[high])[0])
    # convert --reference equals encode, then decode --reference; the default output name says so
    assert runner.invoke(app, ["encode", str(source), *model, "-o", str(tmp_path / "t.vqt")]).exit_code == 0
    result = runner.invoke(app, ["decode", str(tmp_path / "t.vqt"), *model, "--reference", str(low)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(sf.read(tmp_path / "t.ref-low.wav")[0], sf.read(outs[low])[0])


def test_a_token_file_without_a_vector_still_decodes_by_name(tmp_path: Path, codec: Codec) -> None:
    tokens = encode_file(codec, write_tone(tmp_path / "s02_001.wav", 0.3, f0=150))
    assert tokens.header.speaker == "s02"
    older = TokenFile(dataclasses.replace(tokens.header, extra={}), tokens.codes)  # an older writer's
    path = tmp_path / "old.vqt"
    path.write_bytes(dumps(older))
    model = ["-m", str(codec.checkpoint.path)]
    runner = CliRunner()
    for args, voice in ((["--speaker", "s03"], "s03"), ([], "s02")):
        out = tmp_path / f"old_{voice}.wav"
        result = runner.invoke(app, ["decode", str(path), *model, *args, "-o", str(out)])
        assert result.exit_code == 0, result.output
        expected = _decoded(codec, older, voice)
        assert np.allclose(sf.read(out, dtype="float32")[0], expected, atol=1 / 32768 + 1e-6)


def test_voice_options_usage_and_errors(tmp_path: Path, codec: Codec) -> None:
    source = write_tone(tmp_path / "a.wav", 0.2)
    model = ["-m", str(codec.checkpoint.path)]
    runner = CliRunner()
    both = runner.invoke(app, ["convert", str(source), *model, "-s", "s01", "-r", str(source)])
    assert both.exit_code == 2 and "not both" in both.output
    neither = runner.invoke(app, ["convert", str(source), *model])
    assert neither.exit_code == 2 and "--reference" in neither.output
    plain = make_checkpoint(tmp_path / "plain.pt")
    result = runner.invoke(app, ["convert", str(source), "-m", str(plain), "-r", str(source)])
    assert result.exit_code == 1 and "no speaker encoder" in result.output
    missing = runner.invoke(app, ["convert", str(source), *model, "-r", str(tmp_path / "nope.wav")])
    assert missing.exit_code == 1 and "nope.wav" in missing.output
    info = runner.invoke(app, ["info", str(codec.checkpoint.path), "--json"])
    assert info.exit_code == 0 and json.loads(info.output)["speaker_vector_bits"] == 64
    vqt = tmp_path / "a.vqt"
    vqt.write_bytes(dumps(encode_file(codec, source)))
    table = runner.invoke(app, ["info", str(vqt)])
    assert table.exit_code == 0 and "64 bits" in table.output and "speaker vector" in table.output


def test_batches_take_a_reference_vector_in_the_options_or_recordings_not_both(
    tmp_path: Path, codec: Codec
) -> None:
    source = write_tone(tmp_path / "s01_001.wav", 0.3, f0=180)
    low = write_tone(tmp_path / "low.wav", 0.4, f0=90, seed=1)
    by_recording, by_vector = tmp_path / "rec.wav", tmp_path / "vec.wav"
    assert convert_files(codec, [Task(source, by_recording)], reference=[low])[0].ok
    vector = DecodeOptions(reference=codec.reference_vector([low]))
    assert convert_files(codec, [Task(source, by_vector)], vector)[0].ok
    assert np.array_equal(sf.read(by_recording)[0], sf.read(by_vector)[0])
    with pytest.raises(ConfigError, match="not both"):
        convert_files(codec, [Task(source, tmp_path / "x.wav")], vector, reference=[low])


@pytest.mark.parametrize(
    ("n_mels", "fmin", "fmax"), [(42, 0.0, 8000.0), (82, 0.0, 11025.0), (10, 50.0, 900.0), (130, 20, 24000.0)]
)
def test_mel_frequencies_are_librosas(n_mels: int, fmin: float, fmax: float) -> None:
    # the envelope synthesis uses our copy so decoding never imports librosa; it must stay
    # librosa's Slaney scale exactly, or shipped models would decode differently
    expected = librosa.mel_frequencies(n_mels=n_mels, fmin=fmin, fmax=fmax)
    np.testing.assert_array_equal(mel_frequencies(n_mels, fmin, fmax), expected)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels", "fmin", "fmax"),
    [
        (16000, 512, 80, 0.0, None),
        (16000, 1024, 40, 0.0, None),
        (22050, 2048, 128, 30.0, 8000.0),
        (8000, 256, 20, 0.0, 3400.0),
    ],
)
def test_mel_basis_is_librosas(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None
) -> None:
    # the speaker encoder's and the spectrogram loss's features: the filters trained models saw
    expected = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    got = mel_basis(sample_rate, n_fft, n_mels, fmin, fmax)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-9)


def _imported_by(argv: list[str], modules: tuple[str, ...]) -> str:
    """``vqspeech ARGV`` in a fresh interpreter: "EXIT_CODE [those of ``modules`` it imported]"."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom vqspeech_cli.main import app\n"
        f"result = CliRunner().invoke(app, {argv!r})\n"
        f"print(result.exit_code, [m for m in {modules!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip() + (result.stderr[-2000:] if result.stdout.strip() != "0 []" else "")


def test_encoding_with_a_speaker_encoder_does_not_import_librosa(tmp_path: Path) -> None:
    # importing librosa.filters cost ~1 s of every `vqspeech encode` (the speaker encoder's mel
    # features); the filters are written out instead
    codec = Codec.load(make_checkpoint(tmp_path / "enc.pt", extra=SPEAKER_ENCODER))
    wav = write_tone(tmp_path / "voice.wav", 0.3, f0=130)
    argv = ["encode", str(wav), "-m", str(codec.checkpoint.path), "-o", str(tmp_path / "voice.vqt")]
    assert _imported_by(argv, ("librosa",)) == "0 []"
    assert (tmp_path / "voice.vqt").stat().st_size > 0


def test_decoding_a_voice_imports_neither_librosa_nor_scipy_signal(tmp_path: Path) -> None:
    # each costs ~0.5-1 s of start-up on every `vqspeech decode`, and decoding needs neither
    spectrogram = [*SPEAKER_ENCODER, "model.decoders=[spectrogram]", "model.spectrogram.phase_init=pghi"]
    codec = Codec.load(make_checkpoint(tmp_path / "spec.pt", extra=spectrogram))
    vqt = tmp_path / "voice.vqt"
    vqt.write_bytes(dumps(encode_file(codec, write_tone(tmp_path / "voice.wav", 0.3, f0=130))))
    out = tmp_path / "back.wav"
    argv = ["decode", str(vqt), "-m", str(codec.checkpoint.path), "-o", str(out)]
    assert _imported_by(argv, ("librosa", "scipy.signal")) == "0 []"
    assert sf.info(out).frames > 0
