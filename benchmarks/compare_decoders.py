"""Decoder families side by side on one VQ-VAE's frozen codes (issue 16): quality and decode speed.

    .venv/bin/python benchmarks/compare_decoders.py --model RUN/last.pt --data DATA --out DIR \
        [--steps 1500] [--only NAME | --candidates spectrogram,vocos,vocos-gan] [--max 16]

The model's encoder, codebook and speaker table are frozen; on its codes of the corpus's
training split (the split ``vqspeech train`` used) each candidate decoder is trained from
scratch for the same number of steps, batch and segment, on one thread:

* ``spectrogram``: a fresh spectrogram decoder (the demo's family, same config) + Griffin-Lim;
* ``vocos``: :class:`vqspeech.nn.vocos.VocosDecoder`, reconstruction losses only;
* ``vocos-gan``: the same, reconstruction warm-up for ``--warmup`` of the steps, then the
  adversarial stage (multi-period + multi-resolution discriminators, feature matching).

``--only NAME`` trains one candidate and saves ``DIR/NAME.pt`` (run several at once, one per
core); without it, missing candidates are trained in turn, then all are scored on the same
held-out utterances (round-robin over speakers, as ``vqspeech eval``) with STOI, PESQ-WB
(optional ``pesq``), log-mel distance, MCD and DNSMOS OVRL (optional ``speechmos`` +
``onnxruntime``), beside the model's own jointly trained decoder, the copy-synthesis ceiling
(Griffin-Lim, 12 iterations, n_fft 512 / hop 128, on the true magnitudes) and the originals
(DNSMOS only). Then decode speed on one thread, x real time, on 60 s of held-out codes. Prints
a table and a final JSON line; the trained decoders' weights stay in ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqspeech.audio import load_audio
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import Utterance, open_corpus
from vqspeech.evaluation import log_mel_distance, mel_cepstral_distortion, pesq_wb, stoi
from vqspeech.files import write_text_atomic
from vqspeech.inference import Codec
from vqspeech.nn.discriminators import Discriminators
from vqspeech.nn.spectrogram import SpectrogramDecoder
from vqspeech.nn.vocos import VocosDecoder
from vqspeech.nn.vocos_config import VocosConfig, VocosLossConfig
from vqspeech.vocoder import griffin_lim, stft_magnitude
from vqspeech.vocos_training import gan_step, reconstruction_step

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks, as modules
from compare_phase import mean_table  # per-row means, None where never measured

CANDIDATES = ("spectrogram", "vocos", "vocos-gan")


class FrozenCodes:
    """The training split's codes (whole utterances encoded once) and audio, for segment batches."""

    def __init__(self, codec: Codec, utterances: list[Utterance], segment_tokens: int) -> None:
        self.codec, self.segment = codec, segment_tokens
        hop = codec.hop_length
        self.items: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        for utt in utterances:
            audio = load_audio(utt.path, codec.sample_rate)
            codes = torch.from_numpy(codec.encode_audio(audio))[0]
            padded = np.zeros(codes.shape[0] * hop, np.float32)
            padded[: len(audio)] = audio
            if codes.shape[0] >= segment_tokens:
                self.items.append((codes, torch.from_numpy(padded), codec.speaker_id(utt.speaker)))

    @torch.no_grad()
    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step-seeded batch: quantised vectors ``[B, D, T]``, voices ``[B, S]``, audio ``[B, T * hop]``."""
        g = torch.Generator().manual_seed(1000 + step)
        hop, n = self.codec.hop_length, self.segment
        codes, audio, ids = [], [], []
        for _ in range(size):
            c, a, s = self.items[int(torch.randint(len(self.items), (1,), generator=g))]
            start = int(torch.randint(c.shape[0] - n + 1, (1,), generator=g))
            codes.append(c[start : start + n])
            audio.append(a[start * hop : (start + n) * hop])
            ids.append(s)
        model = self.codec.model
        z_q = model.quantizer.lookup(torch.stack(codes))
        voice = model.speaker_vector(torch.tensor(ids))
        return z_q, voice, torch.stack(audio)


def lr_at(step: int, steps: int, peak: float, warmup: int = 30) -> float:
    """Linear warm-up, then cosine to 10 % of ``peak`` (the demo recipe's schedule shape)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def build(name: str, codec: Codec) -> torch.nn.Module:
    config = codec.model.config
    if name == "spectrogram":
        return SpectrogramDecoder(
            config.spectrogram,
            config.quantizer.dim,
            config.speaker_dim,
            config.hop_length,
            config.sample_rate,
        )
    return VocosDecoder(
        VocosConfig(), config.quantizer.dim, config.speaker_dim, config.hop_length, config.sample_rate
    )


def train(name: str, codec: Codec, data: FrozenCodes, args: argparse.Namespace) -> dict[str, Any]:
    """Train candidate ``name`` for ``args.steps`` steps; save ``OUT/NAME.pt``; its log."""
    torch.manual_seed(args.seed)
    decoder = build(name, codec)
    peak = 2e-3 if name == "spectrogram" else args.lr  # 2e-3: the demo recipe's tuned value
    betas = (0.9, 0.999) if name == "spectrogram" else (0.8, 0.9)  # Vocos / HiFi-GAN betas
    opt = torch.optim.AdamW(decoder.parameters(), lr=peak, betas=betas)
    discriminators = d_opt = None
    gan_from = int(args.steps * args.warmup) if name == "vocos-gan" else args.steps
    if name == "vocos-gan":
        discriminators = Discriminators(period_channels=(8, 16, 32, 32), resolution_channels=16)
        d_opt = torch.optim.AdamW(discriminators.parameters(), lr=args.lr, betas=(0.8, 0.9))
    gan_rng = torch.Generator().manual_seed(args.seed)
    weights = VocosLossConfig()
    log: list[dict[str, float]] = []
    started = time.perf_counter()
    for step in range(args.steps):
        lr = lr_at(step, args.steps, peak)
        for group in opt.param_groups:
            group["lr"] = lr
        z_q, voice, audio = data.batch(step, args.batch_size)
        row: dict[str, float] = {"step": step}
        if isinstance(decoder, SpectrogramDecoder):
            opt.zero_grad(set_to_none=True)
            loss = decoder.loss(decoder(z_q, voice), audio)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            opt.step()
            row["loss"] = float(loss)
        elif step < gan_from or discriminators is None or d_opt is None:
            assert isinstance(decoder, VocosDecoder)
            g = reconstruction_step(decoder, opt, z_q, voice, audio, weights)
            row.update(loss=g.loss, stft=g.stft_loss, mel=g.mel_loss)
        else:
            assert isinstance(decoder, VocosDecoder)
            for group in d_opt.param_groups:
                group["lr"] = lr
            g, d_loss = gan_step(
                decoder, discriminators, opt, d_opt, z_q, voice, audio, weights, args.gan_window, gan_rng
            )
            row.update(loss=g.loss, stft=g.stft_loss, mel=g.mel_loss, adv=g.adversarial_loss or 0.0)
            row.update(fm=g.feature_loss or 0.0, disc=d_loss)
        if step % 50 == 0 or step == args.steps - 1:
            row["minutes"] = (time.perf_counter() - started) / 60
            log.append(row)
            print(json.dumps({"candidate": name, **row}), flush=True)
    minutes = (time.perf_counter() - started) / 60
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # only the decoder's weights: the discriminators never enter the inference state
    torch.save(decoder.state_dict(), out / f"{name}.pt")
    summary = {
        "candidate": name,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "segment_tokens": args.segment_tokens,
        "wall_minutes": minutes,
        "gan_from": gan_from,
        "parameters": sum(p.numel() for p in decoder.parameters()),
        "log": log,
    }
    write_text_atomic(out / f"{name}.json", json.dumps(summary))
    return summary


def held_out(codec: Codec, data: str, limit: int) -> list[Utterance]:
    """Up to ``limit`` held-out utterances, round-robin over speakers (as ``vqspeech eval``)."""
    split = split_for(open_corpus(data, sample_rate=codec.sample_rate), codec.checkpoint.recipe)
    known = set(codec.speaker_names)
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in split.valid:
        if utt.speaker in known:
            by_speaker.setdefault(utt.speaker, []).append(utt)
    queues = [by_speaker[s] for s in sorted(by_speaker)]
    order = [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)]
    return order[:limit]


def dnsmos_ovrl(audio: np.ndarray) -> float | None:
    try:
        from speechmos import dnsmos
    except ImportError:
        return None
    return float(dnsmos.run(np.asarray(audio, np.float32), sr=16000)["ovrl_mos"])


@torch.no_grad()
def evaluate(
    codec: Codec, decoders: dict[str, torch.nn.Module], utterances: list[Utterance]
) -> dict[str, Any]:
    model, hop, n_fft = codec.model, codec.hop_length, 512
    rows: dict[str, list[dict[str, float | None]]] = {}
    for utt in utterances:
        audio = load_audio(utt.path, codec.sample_rate)
        codes = torch.from_numpy(codec.encode_audio(audio))
        ids = torch.tensor([codec.speaker_id(utt.speaker)])
        z_q, voice = model.quantizer.lookup(codes), model.speaker_vector(ids)
        g = torch.Generator().manual_seed(0)
        length = codes.shape[1] * hop
        padded = torch.zeros(1, length)
        padded[0, : len(audio)] = torch.from_numpy(audio)
        outputs = {"joint spectrogram (the model's own)": model.decode(codes, ids, generator=g)}
        for name, dec in decoders.items():
            if isinstance(dec, SpectrogramDecoder):
                outputs[name] = dec.vocode(dec(z_q, voice), codes.shape[1], torch.Generator().manual_seed(0))
            else:
                assert isinstance(dec, VocosDecoder)
                outputs[name] = dec.decode(z_q, voice).clamp(-1, 1)
        outputs["copy synthesis (GL on true magnitudes)"] = griffin_lim(
            stft_magnitude(padded, n_fft, 128),
            n_fft,
            128,
            length,
            n_iter=12,
            generator=torch.Generator().manual_seed(0),
        )
        for name, wave in outputs.items():
            deg = wave[0].numpy()[: len(audio)]
            rows.setdefault(name, []).append(
                {
                    "stoi": stoi(audio, deg),
                    "pesq": pesq_wb(audio, deg),
                    "log_mel_db": log_mel_distance(audio, deg),
                    "mcd_db": mel_cepstral_distortion(audio, deg),
                    "dnsmos_ovrl": dnsmos_ovrl(deg),
                }
            )
        rows.setdefault("original", []).append({"dnsmos_ovrl": dnsmos_ovrl(audio)})
        print(f"scored {utt.id}", flush=True)
    return mean_table(rows)


@torch.no_grad()
def speed(
    codec: Codec, decoders: dict[str, torch.nn.Module], utterances: list[Utterance]
) -> dict[str, float]:
    """x real time on one thread for 60 s of held-out codes (utterances repeated), batch 1."""
    torch.set_num_threads(1)
    model, hop, sr = codec.model, codec.hop_length, codec.sample_rate
    pieces = [torch.from_numpy(codec.encode_audio(load_audio(u.path, sr))) for u in utterances]
    codes = torch.cat(pieces * (1 + 60 * sr // hop // sum(p.shape[1] for p in pieces)), dim=1)
    codes = codes[:, : 60 * sr // hop]
    voice = model.speaker_vector(torch.tensor([0]))
    seconds = codes.shape[1] * hop / sr
    out: dict[str, float] = {}
    for name, dec in decoders.items():

        def run(dec: torch.nn.Module = dec) -> None:
            z_q = model.quantizer.lookup(codes)
            if isinstance(dec, SpectrogramDecoder):
                dec.vocode(dec(z_q, voice), codes.shape[1], torch.Generator().manual_seed(0))
            else:
                assert isinstance(dec, VocosDecoder)
                dec.decode(z_q, voice, chunk_tokens=2500)

        run()  # warm-up (numba compile, allocator)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        out[name] = seconds / min(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--segment-tokens", type=int, default=250, help="tokens per training segment (1 s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Vocos peak learning rate")
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="vocos-gan: fraction of steps before the GAN"
    )
    parser.add_argument("--gan-window", type=int, default=4096, help="samples the discriminators judge")
    parser.add_argument("--only", choices=CANDIDATES, default=None)
    parser.add_argument(
        "--candidates", default=",".join(CANDIDATES), help="comma-separated candidates to train and score"
    )
    parser.add_argument("--max", type=int, default=16, help="held-out utterances to score")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = Codec.load(args.model, "cpu")
    out = Path(args.out)
    chosen = [n for n in args.candidates.split(",") if n]
    unknown = sorted(set(chosen) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATES)}")
    names = [args.only] if args.only else chosen
    missing = [n for n in names if not (out / f"{n}.pt").exists()]
    if missing:
        split = split_for(open_corpus(args.data, sample_rate=codec.sample_rate), codec.checkpoint.recipe)
        known = set(codec.speaker_names)
        data = FrozenCodes(codec, [u for u in split.train if u.speaker in known], args.segment_tokens)
        for name in missing:
            train(name, codec, data, args)
    if args.only:
        return
    decoders: dict[str, torch.nn.Module] = {}
    budgets = {}
    for name in names:
        dec = build(name, codec)
        dec.load_state_dict(torch.load(out / f"{name}.pt", weights_only=True))
        decoders[name] = dec.eval()
        budgets[name] = json.loads((out / f"{name}.json").read_text())
    utterances = held_out(codec, args.data, args.max)
    table = evaluate(codec, decoders, utterances)
    xrt = speed(codec, decoders, utterances)

    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    print(
        f"{'decoder':<42}{'steps':>6}{'min':>6}{'STOI':>7}{'PESQ':>6}{'log-mel':>9}{'MCD':>6}{'DNSMOS':>8}{'xRT':>7}"
    )
    for name, s in table.items():
        b = budgets.get(name, {})
        cells = [
            fmt(b.get("wall_minutes"), ".1f"),
            fmt(s.get("stoi"), ".3f"),
            fmt(s.get("pesq"), ".2f"),
            fmt(s.get("log_mel_db"), ".2f"),
            fmt(s.get("mcd_db"), ".2f"),
            fmt(s.get("dnsmos_ovrl"), ".2f"),
            fmt(xrt.get(name), ".0f"),
        ]
        widths = (6, 7, 6, 9, 6, 8, 7)
        print(
            f"{name:<42}{b.get('steps', ''):>6}"
            + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    for b in budgets.values():
        b.pop("log")
    print(
        json.dumps(
            {
                "benchmark": "compare_decoders",
                "scores": table,
                "x_real_time_1_thread": xrt,
                "budgets": budgets,
                "n_utterances": len(utterances),
            }
        )
    )


if __name__ == "__main__":
    main()
