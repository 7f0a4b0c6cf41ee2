"""Fine-tune a model's spectrogram decoder on its own frozen codes: L1 alone, or L1 + a spectrogram GAN.

    .venv/bin/python benchmarks/finetune_spectrogram.py --data DATA --out OUT.pt --mode l1|gan \
        [--model CKPT] [--hold-out SPEAKER ...] [--steps 1000] [--per-speaker 16] [--augment 0.5] \
        [--items CACHE.pt]

    # the runs behind the README's figures: the bundled model, its training manifest, its held-out voices
    .venv/bin/python benchmarks/finetune_spectrogram.py --data bundle/train.tsv --augment 0.5 \
        --items items.pt --mode l1 --steps 1500 --out l1.pt
    .venv/bin/python benchmarks/finetune_spectrogram.py --data bundle/train.tsv --augment 0.5 \
        --items items.pt --mode gan --steps 600 --out gan.pt

The model (default: the bundled one) stays frozen except for a copy of its spectrogram decoder.
From the corpus ``--data`` (VCTK, a folder of speaker folders or a manifest;
:func:`vqspeech.data.corpus.open_corpus`) the first ``--per-speaker`` utterances of every speaker
not held out (``--hold-out``, repeatable; default: the model recipe's ``data.valid_speakers``) are
encoded once, a share ``--augment`` of them first passed through the training-time channel and
room augmentation (:func:`vqspeech.data.augment.augment`, every stage enabled at its default
probability), and kept with their voice: the speaker vector of the (augmented) audio for a model
with a speaker encoder, else the table row of the utterance's speaker (speakers the model does
not know are skipped). ``--items`` caches them (codes, voices, audio; loaded weights-only) for
the next run with the same model and settings.

Each step draws a step-seeded batch of ``--segment-tokens``-token segments and trains the decoder
on its own loss (:meth:`~vqspeech.nn.spectrogram.SpectrogramDecoder.loss`: L1 on log magnitudes
and on log-mel), AdamW at a constant ``--lr``, betas (0.8, 0.99), gradients clipped to norm 10.
``--mode gan`` adds :class:`LogMagnitudeDiscriminator` on a random ``--window``-frame window of
the predicted and true log magnitudes: least-squares GAN losses (Mao et al. 2017) plus L1
feature matching, the decoder's loss ``rec * reconstruction + adv * adversarial + fm * features``
(15 / 1 / 2). A progress table every 50 steps; at the end a full checkpoint
(:func:`vqspeech.checkpoint.save_checkpoint`: the model's weights, recipe and speaker table with
the new decoder) at ``--out``, scored like any model (``vqspeech score DIR -m OUT.pt``), and a
final JSON line. Results: see README, decoder comparison.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vqspeech.audio import load_audio
from vqspeech.checkpoint import save_checkpoint
from vqspeech.data.augment import augment
from vqspeech.data.augment_config import AugmentConfig
from vqspeech.data.corpus import Utterance, open_corpus
from vqspeech.errors import VQSpeechError
from vqspeech.inference import Codec
from vqspeech.nn.spectrogram import SpectrogramDecoder
from vqspeech.vocoder import PGHI_TOLERANCE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks, as modules
from compare_phase import load_spectrogram_codec

#: Steps between progress rows.
LOG_EVERY = 50


class LogMagnitudeDiscriminator(nn.Module):
    """Patch discriminator on log magnitudes ``[B, bins, frames]`` -> logits ``[B, 1, bins', frames]``.

    An experiment, kept so that it can be rerun: it was measured against fine-tuning with the
    reconstruction loss alone and did not win (see README, decoder comparison).

    The spectrogram is an image ``[B, 1, bins, frames]``: log magnitudes floored at
    :data:`~vqspeech.vocoder.PGHI_TOLERANCE` (100 dB down, where phase and level stop mattering)
    and divided by 4 (to about unit scale); ``layers`` weight-normed 2-d convs of ``channels``
    channels (kernel 7 x 5, then 5 x 3, in bins x frames), each striding 2 along frequency and 1
    along time, so every logit judges a band of the spectrum over a few frames, with leaky ReLU
    0.1; then a 3 x 3 conv to one logit per patch. :meth:`forward` also returns every hidden
    layer's activations, for feature matching.
    """

    def __init__(self, channels: int = 16, layers: int = 4) -> None:
        super().__init__()
        convs = [weight_norm(nn.Conv2d(1, channels, (7, 5), (2, 1), padding=(3, 2)))]
        for _ in range(layers - 1):
            convs.append(weight_norm(nn.Conv2d(channels, channels, (5, 3), (2, 1), padding=(2, 1))))
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, log_magnitude: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Log magnitudes ``[B, bins, frames]`` -> logits ``[B, 1, bins / 2**layers, frames]``, features."""
        x = (log_magnitude.clamp(min=PGHI_TOLERANCE) / 4.0).unsqueeze(1)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        return self.out(x), features


class Items:
    """Whole utterances encoded once: codes ``[F]``, voice ``[S]`` and audio ``[F * hop]`` each."""

    def __init__(self, codes: list[Tensor], voices: list[Tensor], audio: list[Tensor]) -> None:
        self.codes, self.voices, self.audio = codes, voices, audio

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def encode(
        cls, codec: Codec, utterances: list[Utterance], augment_share: float, seed: int, min_tokens: int
    ) -> Items:
        """Encode ``utterances`` (a share ``augment_share`` augmented, drawn with ``seed``); utterances
        shorter than ``min_tokens`` tokens, and speakers a table-only model lacks, are skipped."""
        rng = np.random.default_rng(seed)
        config = AugmentConfig(enabled=True)
        known = set(codec.speaker_names)
        items = cls([], [], [])
        hop = codec.hop_length
        for i, utt in enumerate(utterances):
            if i % 200 == 0:
                print(f"encoding {i} / {len(utterances)}", flush=True)
            audio = load_audio(utt.path, codec.sample_rate)
            if rng.random() < augment_share:
                audio = augment(audio, rng, config, codec.sample_rate).astype(np.float32)
            codes = torch.from_numpy(codec.encode_audio(audio))[0]
            if codec.has_speaker_encoder:  # the voice as the encoder hears this (augmented) audio
                voice = torch.from_numpy(codec.speaker_vector([audio]).values)
            elif utt.speaker in known:
                with torch.no_grad():
                    voice = codec.model.speaker_vector(torch.tensor([codec.speaker_id(utt.speaker)]))[0]
            else:
                continue
            padded = np.zeros(codes.shape[0] * hop, np.float32)
            n = min(len(audio), len(padded))
            padded[:n] = audio[:n]
            if codes.shape[0] >= min_tokens:
                items.codes.append(codes)
                items.voices.append(voice.float())
                items.audio.append(torch.from_numpy(padded))
        return items

    def save(self, path: Path, key: str) -> None:
        """Write the items with ``key`` (what they were made from) to ``path``, atomically."""
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"key": key, "codes": self.codes, "voices": self.voices, "audio": self.audio}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, key: str) -> Items:
        """Items :meth:`save` wrote with the same ``key``; ValueError otherwise."""
        saved = torch.load(path, weights_only=True)
        if saved.get("key") != key:
            raise ValueError(
                f"{path} holds items of another model or other settings; delete it or pass another --items"
            )
        return cls(saved["codes"], saved["voices"], saved["audio"])

    @torch.no_grad()
    def batch(self, codec: Codec, step: int, size: int, segment: int) -> tuple[Tensor, Tensor, Tensor]:
        """Step-seeded batch: quantised vectors ``[B, D, segment]``, voices ``[B, S]`` and audio
        ``[B, segment * hop]``."""
        g = torch.Generator().manual_seed(1000 + step)
        hop = codec.hop_length
        codes, voices, audio = [], [], []
        for _ in range(size):
            k = int(torch.randint(len(self), (1,), generator=g))
            start = int(torch.randint(self.codes[k].shape[0] - segment + 1, (1,), generator=g))
            codes.append(self.codes[k][start : start + segment])
            voices.append(self.voices[k])
            audio.append(self.audio[k][start * hop : (start + segment) * hop])
        return codec.model.quantizer.lookup(torch.stack(codes)), torch.stack(voices), torch.stack(audio)


def chosen_utterances(data: str, sample_rate: int, held_out: set[str], per_speaker: int) -> list[Utterance]:
    """The first ``per_speaker`` utterances (by id) of each speaker of ``data`` not in ``held_out``."""
    corpus = open_corpus(data, sample_rate=sample_rate)
    taken: dict[str, int] = {}
    chosen = []
    for utt in corpus.utterances:  # sorted by (speaker, id)
        if utt.speaker not in held_out and taken.get(utt.speaker, 0) < per_speaker:
            taken[utt.speaker] = taken.get(utt.speaker, 0) + 1
            chosen.append(utt)
    return chosen


def gan_losses(
    discriminator: LogMagnitudeDiscriminator,
    d_opt: torch.optim.Optimizer,
    predicted: Tensor,
    target: Tensor,
    window: int,
) -> dict[str, Tensor]:
    """One discriminator step on a random ``window``-frame window of ``[B, bins, frames]`` log
    magnitudes, then the decoder's adversarial and feature-matching losses on the same window
    (graph kept through ``predicted``); the discriminator's loss is returned detached."""
    start = int(torch.randint(predicted.shape[-1] - window + 1, (1,)))
    target = target[..., start : start + window]
    predicted = predicted[..., start : start + window]
    d_opt.zero_grad()
    real, _ = discriminator(target)
    fake, _ = discriminator(predicted.detach())
    d_loss = ((1 - real) ** 2).mean() + (fake**2).mean()
    d_loss.backward()
    torch.nn.utils.clip_grad_norm_(discriminator.parameters(), 10.0)
    d_opt.step()
    discriminator.requires_grad_(False)  # the decoder's step must not touch it
    with torch.no_grad():
        _, real_features = discriminator(target)
    fake, fake_features = discriminator(predicted)
    discriminator.requires_grad_(True)
    adversarial = ((1 - fake) ** 2).mean()
    features = torch.stack(
        [F.l1_loss(f, r) for f, r in zip(fake_features, real_features, strict=True)]
    ).mean()
    return {"d": d_loss.detach(), "adv": adversarial, "fm": features}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint or run folder (default: the bundled model)")
    parser.add_argument(
        "--data", required=True, help="corpus: VCTK, a folder of speaker folders, or a manifest"
    )
    parser.add_argument("--out", required=True, help="where the fine-tuned checkpoint goes")
    parser.add_argument("--mode", choices=["l1", "gan"], required=True)
    parser.add_argument(
        "--hold-out",
        action="append",
        default=None,
        metavar="SPEAKER",
        help="speaker to leave out (repeatable; default: the model recipe's data.valid_speakers)",
    )
    parser.add_argument("--per-speaker", type=int, default=16, help="utterances per speaker")
    parser.add_argument(
        "--augment", type=float, default=0.0, help="share of utterances augmented (0.5 measured)"
    )
    parser.add_argument("--items", default=None, help="cache file of the encoded utterances")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--segment-tokens", type=int, default=250, help="tokens per training segment")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rec", type=float, default=15.0, help="gan: reconstruction loss weight")
    parser.add_argument("--adv", type=float, default=1.0, help="gan: adversarial loss weight")
    parser.add_argument("--fm", type=float, default=2.0, help="gan: feature-matching loss weight")
    parser.add_argument("--window", type=int, default=64, help="gan: decoder frames the discriminator judges")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    codec = load_spectrogram_codec(parser, args.model)
    frozen = codec.model.decoders["spectrogram"]
    assert isinstance(frozen, SpectrogramDecoder)
    if args.mode == "gan" and frozen.output_frames(args.segment_tokens) < args.window:
        frames = frozen.output_frames(args.segment_tokens)
        parser.error(f"--window {args.window} is longer than a segment's {frames} decoder frames")
    recipe = codec.checkpoint.recipe
    held_out = set(args.hold_out if args.hold_out is not None else recipe.data.valid_speakers)

    key = json.dumps(
        [codec.fingerprint, str(Path(args.data).resolve()), sorted(held_out), args.per_speaker,
         args.augment, args.seed, args.segment_tokens]
    )  # fmt: skip
    cache = Path(args.items) if args.items else None
    if cache is not None and cache.exists():
        try:
            items = Items.load(cache, key)
        except ValueError as exc:
            parser.error(str(exc))
    else:
        try:
            utterances = chosen_utterances(args.data, codec.sample_rate, held_out, args.per_speaker)
        except VQSpeechError as exc:
            parser.error(str(exc))
        print(f"{len(utterances)} utterances, held out: {', '.join(sorted(held_out)) or 'none'}", flush=True)
        items = Items.encode(codec, utterances, args.augment, args.seed, args.segment_tokens)
        if cache is not None:
            items.save(cache, key)
    if not len(items):
        parser.error(f"no utterance of at least {args.segment_tokens} tokens to train on")

    decoder = copy.deepcopy(frozen).train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=args.lr, betas=(0.8, 0.99))
    discriminator = LogMagnitudeDiscriminator() if args.mode == "gan" else None
    d_opt = (
        torch.optim.AdamW(discriminator.parameters(), lr=args.lr, betas=(0.8, 0.99))
        if discriminator is not None
        else None
    )
    columns = ("step", "rec", "d", "adv", "fm", "minutes")
    print("".join(f"{c:>10}" for c in columns), flush=True)
    log: list[dict[str, float]] = []
    started = time.perf_counter()
    for step in range(args.steps):
        z_q, voice, audio = items.batch(codec, step, args.batch_size, args.segment_tokens)
        predicted = decoder(z_q, voice)
        reconstruction = decoder.loss(predicted, audio)
        row: dict[str, float] = {"step": step, "rec": float(reconstruction.detach())}
        if discriminator is not None and d_opt is not None:
            gan = gan_losses(discriminator, d_opt, predicted, decoder.target(audio), args.window)
            loss = args.rec * reconstruction + args.adv * gan["adv"] + args.fm * gan["fm"]
            row.update({name: float(value.detach()) for name, value in gan.items()})
        else:
            loss = reconstruction
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 10.0)
        opt.step()
        if step % LOG_EVERY == 0 or step == args.steps - 1:
            row["minutes"] = (time.perf_counter() - started) / 60
            log.append(row)
            cells = [f"{row[c]:.4g}" if c in row else "" for c in columns]
            print("".join(f"{c:>10}" for c in cells), flush=True)
    minutes = (time.perf_counter() - started) / 60

    model = codec.checkpoint.build_model()
    model.decoders["spectrogram"].load_state_dict(decoder.state_dict())
    base_step = int(codec.checkpoint.training.get("step") or 0)
    finetune: dict[str, Any] = {
        "decoder": "spectrogram",
        "mode": args.mode,
        "steps": args.steps,
        "from": str(codec.checkpoint.path),
    }
    save_checkpoint(
        args.out,
        model,
        recipe,
        codec.checkpoint.speakers,
        {"step": base_step + args.steps, "finetune": finetune},
    )
    print(
        json.dumps(
            {
                "benchmark": "finetune_spectrogram",
                **finetune,
                "out": str(args.out),
                "items": len(items),
                "held_out": sorted(held_out),
                "augment": args.augment,
                "wall_minutes": minutes,
                "log": log,
            }
        )
    )


if __name__ == "__main__":
    main()
