"""Score a checkpoint on the held-out utterances of a corpus: STOI, distances, codes, conversion, leakage.

    .venv/bin/python benchmarks/eval_held_out.py RUN/last.pt DATA_DIR \
        [--decoder wavenet|spectrogram] [--max 16] [--conversions 2]

The same measures as ``vqspeech eval`` (:func:`vqspeech.evaluation.evaluate_model`), as one
table row and a final JSON line (the issue #5 side-by-side table is two runs of this).
"""

from __future__ import annotations

import argparse
import json

from vqspeech.evaluation import evaluate_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--decoder", default=None)
    parser.add_argument("--max", type=int, default=16, help="held-out utterances to decode")
    parser.add_argument("--conversions", type=int, default=2, help="conversions per utterance")
    args = parser.parse_args()
    r = evaluate_model(
        args.checkpoint,
        args.data,
        decoder=args.decoder,
        max_utterances=args.max,
        conversions_per_utterance=args.conversions,
    )
    s, c, v, k = r.reconstruction, r.codes, r.conversion, r.leakage
    pesq = "n/a" if s.pesq is None else f"{s.pesq:.2f}"
    print(
        f"{'decoder':<12}{'n':>4}{'STOI':>7}{'log-mel dB':>12}{'MCD dB':>9}{'PESQ':>6}"
        f"{'codes':>7}{'H bits':>8}{'target':>8}{'source':>8}{'leak':>6}{'decode xRT':>12}"
    )
    print(
        f"{r.decoder:<12}{s.n:>4}{s.stoi:>7.3f}{s.log_mel_distance:>12.2f}{s.mel_cepstral_distortion:>9.2f}"
        f"{pesq:>6}{c.codes_used:>7}{c.entropy_bits:>8.2f}{v.target_rate:>8.0%}{v.source_rate:>8.0%}"
        f"{k.accuracy:>6.0%}{r.decode_x_real_time:>12.1f}"
    )
    print(
        f"conversion: pitch moved {v.moved_semitones:+.1f} of {v.wanted_semitones:.1f} semitones "
        f"wanted ({v.n} conversions); leakage chance {k.chance:.0%}"
    )
    data = r.to_dict()
    data.pop("samples")
    data["codes"].pop("code_counts")
    print(json.dumps({"benchmark": "held_out", **data}))


if __name__ == "__main__":
    main()
