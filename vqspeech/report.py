"""One self-contained HTML report of a trained model: metrics, audio, spectrograms, curves.

:func:`write_report` turns an evaluation (the dict of
:meth:`vqspeech.evaluation.EvalReport.to_dict`), the WAVs it wrote and a run folder's
``metrics.csv`` into a single ``.html`` file that opens anywhere, offline, and can be mailed
around: every WAV and picture is inlined as a ``data:`` URI (base64), the CSS is inline, and
there is no JavaScript and no external URL. Every piece of text from the outside (speaker and
utterance names, recipe values) is HTML-escaped.

Sizes: a 16-bit 16 kHz WAV is 32 kB per second, a third more in base64, so each embedded
utterance (original, reconstruction and two conversions of ~2.5 s) costs ~0.65 MB with its
spectrogram; :data:`MAX_UTTERANCES` of them keep the file at a few MB (3.3 MB for the demo).
The others are listed by name; their WAVs stay in the audio folder.

The aims come from project issue 6 (:data:`vqspeech.evaluation.aims.AIMS`): held-out STOI >= 0.75
and voice conversions recognised as the target speaker >= 80 % of the time.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import vqspeech
from vqspeech.audio import audio_info, load_audio, save_audio
from vqspeech.config import Recipe
from vqspeech.evaluation.aims import check_aims
from vqspeech.evaluation.aims import fixed3 as _fixed3
from vqspeech.evaluation.aims import lookup as _lookup
from vqspeech.evaluation.aims import number as _number
from vqspeech.evaluation.aims import percent as _percent
from vqspeech.files import write_text_atomic
from vqspeech.plots import code_usage_png, curves_png, spectrograms_png
from vqspeech.recipe_io import to_dict

#: Utterances whose audio and spectrograms are embedded (the rest are only named).
MAX_UTTERANCES = 5


def summary_lines(evaluation: Mapping[str, Any]) -> list[str]:
    """The headline numbers besides the aims, one line per aspect (for a terminal)."""
    f = _FORMATS

    def get(*path: str) -> float | None:
        return _number(_lookup(evaluation, path))

    return [
        f"reconstruction: STOI {f['fixed3'](get('reconstruction', 'stoi'))}, "
        f"log-mel distance {f['db'](get('reconstruction', 'log_mel_distance'))}, "
        f"MCD {f['db'](get('reconstruction', 'mel_cepstral_distortion'))}",
        f"codes: {f['int'](get('codes', 'codes_used'))} of {f['int'](get('codes', 'codebook_size'))} used, "
        f"{f['bps'](get('codes', 'entropy_bitrate'))} at their entropy "
        f"({f['bps'](get('codes', 'raw_bitrate'))} raw)",
        f"conversion: heard as the target {f['percent'](get('conversion', 'target_rate'))}, "
        f"as the source {f['percent'](get('conversion', 'source_rate'))}; speaker from the codes alone "
        f"{f['percent'](get('leakage', 'accuracy'))} (chance {f['percent'](get('leakage', 'chance'))})",
    ]


def read_metrics(path: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """A run's ``metrics.csv`` (rows ``step,name,value``) -> ``{name: (steps, values)}``, by step.

    A resumed run logs the steps between its last checkpoint and the interruption twice; the
    later value wins. A missing file gives ``{}``.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    series: dict[str, dict[int, float]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                step, value = int(row["step"]), float(row["value"])
            except (KeyError, TypeError, ValueError):
                continue  # a line cut short by a kill: skip it
            series.setdefault(row["name"], {})[step] = value
    return {
        name: (sorted(points), [points[s] for s in sorted(points)]) for name, points in sorted(series.items())
    }


def write_report(
    path: str | Path,
    *,
    evaluation: Mapping[str, Any],
    audio_dir: str | Path,
    run_dir: str | Path | None = None,
    recipe: Recipe | None = None,
    step: int | None = None,
    corpus: str | None = None,
    timings: Mapping[str, float] | None = None,
    tokens: Mapping[str, float] | None = None,
    max_utterances: int = MAX_UTTERANCES,
    title: str = "vqspeech report",
) -> Path:
    """Write the self-contained HTML report to ``path`` (atomically); return ``path``.

    Args:
        evaluation: ``EvalReport.to_dict()``: ``reconstruction``, ``codes``, ``conversion``,
            ``leakage``, ``samples`` (each with ``orig``/``recon``/``conversions`` WAV paths
            relative to ``audio_dir``), ``decode_x_real_time``. Missing values show as "n/a".
        audio_dir: the folder the evaluation wrote its WAVs into.
        run_dir: a training run folder; its ``metrics.csv`` gives the training curves.
        recipe: the trained recipe (the headline names its model); ``step``: steps trained.
        corpus: one line saying what the data was (e.g. "8 speakers x 40 utterances, ...").
        timings: wall-clock seconds per stage, in order (e.g. ``{"train": 540.0}``).
        tokens: token-file totals: ``files``, ``bytes``, ``seconds`` (of audio).
        max_utterances: utterances whose audio and spectrograms are embedded.
        title: the page title.

    Raises:
        OutputError: the report cannot be written.
        AudioError: a WAV the evaluation names is unreadable.
    """
    path = Path(path)
    audio_dir = Path(audio_dir)
    metrics = read_metrics(Path(run_dir) / "metrics.csv") if run_dir is not None else {}
    samples = [s for s in evaluation.get("samples") or [] if isinstance(s, Mapping)]
    parts = [
        _head(title),
        f"<h1>{_e(title)}</h1>",
        _headline(evaluation, recipe, step, corpus, timings, metrics),
        _metrics_section(evaluation, tokens),
        _samples_section(samples, audio_dir, max_utterances),
        _codes_section(evaluation),
        _training_section(metrics),
        _details_section(evaluation, recipe),
        _footer(),
    ]
    write_text_atomic(path, "\n".join(parts), "report")
    return path


# --------------------------------------------------------------------------------------------
# Sections


_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: left; vertical-align: middle; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.met { color: #17702b; font-weight: bold; } .missed { color: #b3261e; font-weight: bold; }
.note { color: #666; font-size: 0.9em; }
img { max-width: 100%; } audio { height: 2.2em; width: 22em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def _head(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>"
    )


def _headline(
    evaluation: Mapping[str, Any],
    recipe: Recipe | None,
    step: int | None,
    corpus: str | None,
    timings: Mapping[str, float] | None,
    metrics: Mapping[str, tuple[list[int], list[float]]],
) -> str:
    what = []
    if recipe is not None:
        m = recipe.model
        vocoder = ""
        if m.decoders[0] == "spectrogram":  # how its magnitudes become audio (issue 16)
            start = (
                "phase gradient heap integration" if m.spectrogram.phase_init == "pghi" else "random phases"
            )
            vocoder = f" (Griffin-Lim from {start})"
            if m.spectrogram.harmonic:
                vocoder = " (harmonic-plus-noise vocoder at a predicted pitch)"
        what.append(
            f"A VQ-VAE (recipe <b>{_e(recipe.name)}</b>: {m.hop_length}x downsampling, "
            f"K = {m.quantizer.codebook_size} codes, {_e(' + '.join(m.decoders))} decoder{_e(vocoder)}, "
            f"{m.n_speakers} speakers) "
        )
    else:
        what.append("A VQ-VAE ")
    if step is None and "train/loss" in metrics:
        step = metrics["train/loss"][0][-1]
    what.append(f"trained for {step} steps" if step is not None else "trained")
    if timings and timings.get("train"):
        what.append(f" ({_duration(timings['train'])} of training on this machine)")
    if corpus:
        what.append(f" on {_e(corpus)}")
    what.append(".")
    lines = [f"<p>{''.join(what)}</p>", "<ul>"]
    for r in check_aims(evaluation):
        verdict = '<span class="met">met</span>' if r.met else '<span class="missed">not met</span>'
        lines.append(
            f"<li>{_e(r.aim.label)}: <b>{_e(r.value_text)}</b> (aim &ge; {_e(r.target_text)}): {verdict}</li>"
        )
    lines.append("</ul>")
    if timings:
        cells = ", ".join(f"{_e(stage)} {_e(_duration(s))}" for stage, s in timings.items())
        lines.append(f'<p class="note">Wall-clock time: {cells}.</p>')
    return "\n".join(lines)


# (section, label, path into the evaluation dict, formatter, note)
_ROWS: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("reconstruction", "STOI", ("reconstruction", "stoi"), "fixed3", "0..1, higher is better"),
    ("reconstruction", "log-mel distance", ("reconstruction", "log_mel_distance"), "db", "lower is better"),
    ("reconstruction", "mel-cepstral distortion", ("reconstruction", "mel_cepstral_distortion"), "db",
     "lower is better"),
    ("reconstruction", "wide-band PESQ", ("reconstruction", "pesq"), "fixed2",
     "1.04..4.64; n/a without the pesq package"),
    ("codes", "codes used", ("codes", "codes_used"), "int", "by the held-out utterances' tokens"),
    ("codes", "codes unused", ("codes", "dead_codes"), "int", "K minus codes used"),
    ("codes", "perplexity", ("codes", "perplexity"), "fixed1", "effective number of codes"),
    ("codes", "entropy", ("codes", "entropy_bits"), "bits", "per token"),
    ("codes", "entropy bitrate", ("codes", "entropy_bitrate"), "bps", "what an entropy coder would need"),
    ("codes", "raw bitrate", ("codes", "raw_bitrate"), "bps", "ceil(log2 K) bits per token"),
    ("conversion", "recognised as the target", ("conversion", "target_rate"), "percent",
     "speaker classifier on converted audio"),
    ("conversion", "recognised as the source", ("conversion", "source_rate"), "percent", "lower is better"),
    ("conversion", "reconstructions recognised as their speaker", ("conversion", "reconstruction_rate"),
     "percent", "control: low means the classifier does not recognise decoded speech"),
    ("conversion", "classifier accuracy on real held-out speech", ("conversion", "classifier_accuracy"),
     "percent", "how far the classifier can be trusted"),
    ("conversion", "pitch moved", ("conversion", "moved_semitones"), "semitones", "toward the target"),
    ("conversion", "pitch gap to the target", ("conversion", "wanted_semitones"), "interval",
     "between the real voices"),
    ("leakage", "speaker identified from the codes", ("leakage", "accuracy"), "percent",
     "lower means codes carry less speaker identity"),
    ("leakage", "chance", ("leakage", "chance"), "percent", ""),
    ("leakage", "speaker information in one code", ("leakage", "token_bits"), "bits",
     "held out; lower is better"),
    ("speed", "decoding speed", ("decode_x_real_time",), "xrt", "x real time"),
)  # fmt: skip


def _metrics_section(evaluation: Mapping[str, Any], tokens: Mapping[str, float] | None) -> str:
    rows = []
    for section, label, path, kind, note in _ROWS:
        value = _lookup(evaluation, path)
        rows.append(
            f"<tr><td>{_e(section)}</td><td>{_e(label)}</td>"
            f'<td class="num">{_e(_FORMATS[kind](_number(value)))}</td>'
            f'<td class="note">{_e(note)}</td></tr>'
        )
    if tokens and tokens.get("files"):
        seconds = float(tokens.get("seconds") or 0.0)
        size = float(tokens.get("bytes") or 0.0)
        rate = 8 * size / seconds if seconds else None
        rows.append(
            f"<tr><td>token files</td><td>{int(tokens['files'])} .vqt files, {_e(_bytes(size))}</td>"
            f'<td class="num">{_e(_bps(rate))}</td>'
            '<td class="note">whole files (header and checksum included) per second of audio</td></tr>'
        )
    n = len(evaluation.get("samples") or [])
    caption = f"Held-out utterances (never seen in training): {n} evaluated." if n else ""
    return (
        "<h2>Metrics</h2>\n"
        f'<p class="note">{_e(caption)}</p>\n'
        "<table>\n<tr><th>what</th><th>metric</th><th>value</th><th></th></tr>\n"
        + "\n".join(rows)
        + "\n</table>"
    )


# Per-utterance scores shown under its title: (key, format).
_SAMPLE_SCORES = (
    ("seconds", "{:.1f} s"),
    ("stoi", "STOI {:.3f}"),
    ("log_mel_distance", "log-mel distance {:.1f} dB"),
    ("mel_cepstral_distortion", "MCD {:.1f} dB"),
    ("pesq", "PESQ {:.2f}"),
)


def _samples_section(samples: Sequence[Mapping[str, Any]], audio_dir: Path, limit: int) -> str:
    if not samples:
        return "<h2>Listen</h2>\n<p>No utterances were evaluated.</p>"
    shown = samples[: max(0, limit)]
    out = [
        "<h2>Listen</h2>",
        f'<p class="note">Original, reconstruction (encode to tokens, decode as the same speaker) and '
        f"conversions (the same tokens decoded as another speaker) of {len(shown)} of the "
        f"{len(samples)} evaluated utterances; spectrograms are log-mel, on one colour scale.</p>",
    ]
    for sample in shown:
        out.append(_sample_block(sample, audio_dir))
    rest = samples[len(shown) :]
    if rest:
        names = ", ".join(str(s.get("utterance", "?")) for s in rest)
        out.append(
            f'<p class="note">Not embedded, to keep this file small (their WAVs are in '
            f"{_e(str(audio_dir))}): {_e(names)}.</p>"
        )
    return "\n".join(out)


def _sample_block(sample: Mapping[str, Any], audio_dir: Path) -> str:
    """One utterance: its scores, a player per clip with who the speaker classifier hears, and
    one picture with every clip's spectrogram."""
    utterance, speaker = str(sample.get("utterance", "?")), str(sample.get("speaker", "?"))
    # (label, WAV path relative to audio_dir, who should be heard, who the classifier heard)
    clips: list[tuple[str, str, str | None, Any]] = []
    if sample.get("orig"):
        clips.append(("original", str(sample["orig"]), None, None))
    if sample.get("recon"):
        clips.append(
            (f"reconstruction (as {speaker})", str(sample["recon"]), speaker, sample.get("recon_heard_as"))
        )
    conversions = sample.get("conversions")
    heard_as = sample.get("conversions_heard_as")
    for target, rel in conversions.items() if isinstance(conversions, Mapping) else []:
        heard = heard_as.get(target) if isinstance(heard_as, Mapping) else None
        clips.append((f"converted to {target}", str(rel), str(target), heard))
    rows, waves, rate = [], {}, 16000
    for label, rel, wanted, heard in clips:
        wav = audio_dir / rel
        if not wav.is_file():
            rows.append(f'<tr><td>{_e(label)}</td><td class="note">missing: {_e(rel)}</td><td></td></tr>')
            continue
        _, rate, _ = audio_info(wav)
        audio = load_audio(wav, rate)
        waves[label] = audio
        rows.append(
            f"<tr><td>{_e(label)}</td>"
            f'<td><audio controls preload="none" src="{_wav_uri(audio, rate)}"></audio></td>'
            f"<td>{_heard(wanted, heard)}</td></tr>"
        )
    scores = " · ".join(
        fmt.format(number) for key, fmt in _SAMPLE_SCORES if (number := _number(sample.get(key))) is not None
    )
    parts = [
        f'<h3>{_e(utterance)} <span class="note">spoken by {_e(speaker)}</span></h3>',
        f'<p class="note">{_e(scores)}</p>' if scores else "",
        "<table>\n<tr><th></th><th></th><th>speaker classifier hears</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>",
    ]
    if waves:
        png = spectrograms_png(waves, rate, dpi=64)
        parts.append(f'<img alt="log-mel spectrograms of {_e(utterance)}" src="{_png_uri(png)}">')
    return "\n".join(p for p in parts if p)


def _heard(wanted: str | None, heard: Any) -> str:
    """``s03`` in green when the classifier hears who should speak, in red otherwise."""
    if wanted is None or heard is None:
        return ""
    cls = "met" if str(heard) == wanted else "missed"
    return f'<span class="{cls}">{_e(str(heard))}</span>'


def _codes_section(evaluation: Mapping[str, Any]) -> str:
    counts = _lookup(evaluation, ("codes", "code_counts"))
    if not isinstance(counts, Sequence) or not counts:
        return "<h2>Codebook usage</h2>\n<p>No code counts in the evaluation.</p>"
    png = code_usage_png([int(c) for c in counts])
    return (
        "<h2>Codebook usage</h2>\n"
        '<p class="note">How often each code occurs in the held-out utterances\' tokens, most used '
        "first (log scale).</p>\n"
        f'<img alt="codebook usage" src="{_png_uri(png)}">'
    )


# (panel title, [(label, metrics.csv name)]): what train.py logs (train/*, valid/*).
_CURVES = (
    ("loss (nats)", [("train", "train/loss"), ("train reconstruction", "train/reconstruction_loss"),
                     ("valid reconstruction", "valid/valid_loss")]),
    ("codebook perplexity", [("train batch", "train/perplexity"), ("valid", "valid/valid_perplexity")]),
    ("codes", [("used (valid)", "valid/codes_used"), ("dead", "valid/dead_codes")]),
)  # fmt: skip


def _training_section(metrics: Mapping[str, tuple[list[int], list[float]]]) -> str:
    if not metrics:
        return "<h2>Training</h2>\n<p>No training metrics (metrics.csv) were found.</p>"
    panels = {
        title: {label: metrics[name] for label, name in series if name in metrics}
        for title, series in _CURVES
    }
    rows = [
        f'<tr><td>{_e(name)}</td><td class="num">{values[-1]:.4g}</td><td class="num">{steps[-1]}</td></tr>'
        for name, (steps, values) in metrics.items()
    ]
    return (
        "<h2>Training</h2>\n"
        f'<img alt="training curves" src="{_png_uri(curves_png(panels))}">\n'
        "<details><summary>last logged values</summary>\n"
        "<table>\n<tr><th>metric</th><th>value</th><th>step</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>\n</details>"
    )


def _details_section(evaluation: Mapping[str, Any], recipe: Recipe | None) -> str:
    shown = {k: v for k, v in evaluation.items() if k != "samples"}
    counts = _lookup(shown, ("codes", "code_counts"))
    if isinstance(counts, list):  # 512 numbers are in eval.json; here they are noise
        shown = {**shown, "codes": {**shown["codes"], "code_counts": f"[{len(counts)} counts]"}}
    parts = [
        "<h2>Details</h2>",
        "<details><summary>evaluation (eval.json, without the per-utterance rows)</summary>",
        f"<pre>{_e(json.dumps(shown, indent=2, default=str))}</pre></details>",
    ]
    if recipe is not None:
        parts += [
            "<details><summary>recipe</summary>",
            f"<pre>{_e(json.dumps(to_dict(recipe), indent=2))}</pre></details>",
        ]
    return "\n".join(parts)


def _footer() -> str:
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f'<p class="note">Written by vqspeech {_e(vqspeech.__version__)} on {_e(when)}. VQ-VAE after '
        "van den Oord, Vinyals and Kavukcuoglu, <i>Neural Discrete Representation Learning</i> "
        "(NIPS 2017).</p>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------------------------
# Helpers


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _fmt(pattern: str) -> Callable[[float | None], str]:
    return lambda v: "n/a" if v is None else pattern.format(v)


def _bps(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} bits/s"


_FORMATS: dict[str, Callable[[float | None], str]] = {
    "fixed1": _fmt("{:.1f}"),
    "fixed2": _fmt("{:.2f}"),
    "fixed3": _fixed3,
    "int": _fmt("{:.0f}"),
    "db": _fmt("{:.2f} dB"),
    "bits": _fmt("{:.2f} bits"),
    "bps": _bps,
    "percent": _percent,
    "semitones": _fmt("{:+.1f} semitones"),
    "interval": _fmt("{:.1f} semitones"),
    "xrt": _fmt("{:.0f}x"),
}


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _bytes(size: float) -> str:
    return f"{size / 1024:.1f} kB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"


def _wav_uri(audio: np.ndarray, sample_rate: int) -> str:
    """``data:audio/wav;base64,...`` of ``audio`` as 16-bit PCM WAV (what every browser plays)."""
    buffer = io.BytesIO()
    save_audio(buffer, audio, sample_rate, subtype="PCM_16", format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
