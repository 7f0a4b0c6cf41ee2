"""Score a checkpoint on the held-out utterances of a corpus: STOI, log-mel distance, MCD, bitrates.

    .venv/bin/python benchmarks/eval_held_out.py RUN/last.pt DATA_DIR \
        [--decoder wavenet|spectrogram] [--max 16]

Prints a table and a final JSON line (the issue #5 side-by-side table is two runs of this).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from vqspeech.evaluation import conversion_pitch, evaluate_held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--decoder", default=None)
    parser.add_argument("--max", type=int, default=16, help="held-out utterances to score")
    args = parser.parse_args()
    r = evaluate_held_out(args.checkpoint, args.data, args.decoder, args.max)
    s = r.scores
    print(
        f"{'decoder':<12}{'n':>4}{'STOI':>7}{'log-mel dB':>12}{'MCD dB':>9}"
        f"{'codes':>7}{'H bits':>8}{'decode xRT':>12}"
    )
    print(
        f"{r.decoder:<12}{s.n:>4}{s.stoi:>7.3f}{s.log_mel_distance:>12.2f}{s.mel_cepstral_distortion:>9.2f}"
        f"{r.codes_used:>7}{r.code_entropy_bits:>8.2f}{r.decode_x_real_time:>12.1f}"
    )
    c = conversion_pitch(args.checkpoint, args.data, args.decoder, args.max)
    print(
        f"conversion to the farthest-pitched speaker: pitch moved {c.moved_semitones:+.1f} of "
        f"{c.wanted_semitones:.1f} semitones wanted ({c.n} utterances)"
    )
    print(json.dumps({"benchmark": "held_out", **dataclasses.asdict(r), "conversion": dataclasses.asdict(c)}))


if __name__ == "__main__":
    main()
