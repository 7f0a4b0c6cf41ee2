"""The whole job in one call: synthesise a corpus, train, encode, decode, convert, evaluate, report.

:func:`run_demo` fills one folder (``demo-out`` from ``bash scripts/demo.sh``)::

    OUT/data/          the synthetic corpus (VCTK 0.92 layout; its 16 kHz cache inside)
    OUT/run/           the training run: last.pt, metrics.csv, tensorboard/, samples/
    OUT/audio/         the evaluation's WAVs: <utt>.orig.wav, .recon.wav, .to_<speaker>.wav
    OUT/tokens/        the evaluated utterances as token files: <speaker>/<utterance>.vqt
    OUT/eval.json      the evaluation (vqspeech.evaluation.EvalReport.to_dict())
    OUT/report.html    one self-contained page: metrics, players, spectrograms, curves
    OUT/demo.json      what this folder holds and with which settings (for reruns)

Reruns do not redo work: a complete corpus made with the same settings is reused, a
finished run is reused (an interrupted one resumes; a larger ``steps`` extends it), and an
evaluation of the same checkpoint step with the same settings is reused; the report is
always rewritten. A folder made with other corpus settings or recipe overrides is refused
rather than mixed (pick another folder or delete it).

Ctrl-C during training saves a checkpoint and returns ``interrupted=True`` (run the demo
again to continue); elsewhere it raises ``KeyboardInterrupt`` and leaves every finished
stage in place.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vqspeech.checkpoint import load_checkpoint
from vqspeech.codec import Codec
from vqspeech.config import load_recipe
from vqspeech.data.corpus import open_corpus
from vqspeech.data.synth import synthesize_corpus
from vqspeech.errors import ConfigError
from vqspeech.evaluation.aims import AimResult, check_aims
from vqspeech.files import write_text_atomic
from vqspeech.inference import encode_file, write_token_output
from vqspeech.loop import EvalMetrics, SilentCallback, StepMetrics, TrainCallback
from vqspeech.report import write_report
from vqspeech.tokens import TOKEN_SUFFIX
from vqspeech.train import LAST, train

DATA, RUN, TOKENS, AUDIO = "data", "run", "tokens", "audio"
EVAL_JSON, REPORT, STATE = "eval.json", "report.html", "demo.json"
_STATE_VERSION = 1


class DemoCallback(TrainCallback, Protocol):
    """Training's callbacks (:class:`~vqspeech.train.TrainCallback`) plus the demo's stages.

    ``on_message`` also carries the evaluation's progress lines.
    """

    def on_stage(self, stage: str, text: str) -> None:
        """A stage (``synth``, ``train``, ``evaluate``, ``tokens``, ``report``) starts or is reused."""

    def on_progress(self, stage: str, done: int, total: int) -> None:
        """Progress within a stage without its own callback (``synth``: utterances written)."""


class SilentDemoCallback(SilentCallback):
    def on_stage(self, stage: str, text: str) -> None:
        pass

    def on_progress(self, stage: str, done: int, total: int) -> None:
        pass


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did and where it put it.

    ``report`` and ``evaluation`` (eval.json) are None when training was interrupted.
    ``timings`` holds this call's wall-clock seconds per stage it ran; ``reused`` the stages
    whose outputs were already there. ``metrics`` is the evaluation dict (empty if none).
    """

    out_dir: Path
    checkpoint: Path
    step: int
    total_steps: int
    interrupted: bool
    report: Path | None = None
    evaluation: Path | None = None
    aims: tuple[AimResult, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    reused: tuple[str, ...] = ()


def run_demo(
    out_dir: str | Path,
    *,
    steps: int | None = None,
    speakers: int = 8,
    utterances: int = 40,
    overrides: Sequence[str] = (),
    engines: Sequence[str] | None = None,
    seed: int = 0,
    max_utterances: int = 8,
    conversions: int = 2,
    device: str = "auto",
    callback: DemoCallback | None = None,
) -> DemoResult:
    """Run (or finish) the demo in ``out_dir``; see the module docstring for what goes where.

    Args:
        out_dir: the demo's folder (created).
        steps: total training steps (default: the ``demo`` recipe's, 1000).
        speakers, utterances: corpus size: speakers x utterances per speaker (~3 s each).
        overrides: ``key=value`` recipe overrides on top of ``demo`` (as ``--set``).
        engines: synthesisers for the corpus (default: every one installed).
        seed: corpus seed, and the evaluation's sampling seed.
        max_utterances: held-out utterances to encode, decode, convert and score.
        conversions: target speakers per utterance (each other than its own).
        device: ``auto``, ``cpu`` or ``cuda`` for training and encoding.
        callback: progress (the CLI's renders it); default silent.

    Raises:
        ConfigError: bad sizes, or ``out_dir`` holds a demo made with other settings.
        DataError, AudioError, OutputError: from the stages (synthesis, training, writing).
    """
    cb: DemoCallback = callback or SilentDemoCallback()
    out = Path(out_dir).expanduser()
    if conversions < 0:
        raise ConfigError(f"conversions must be 0 or more, got {conversions}")
    if speakers < max(2, conversions + 1):  # the evaluation's speaker classifier needs 2
        raise ConfigError(
            f"{conversions} conversions per utterance need at least {max(2, conversions + 1)} speakers, "
            f"got {speakers}; raise --speakers"
        )
    if max_utterances < 1:
        raise ConfigError(f"max_utterances must be at least 1, got {max_utterances}")
    recipe = load_recipe("demo", overrides)  # fail on a bad override before any work
    total_steps = steps if steps is not None else recipe.train.steps
    corpus_settings = {
        "speakers": speakers,
        "utterances": utterances,
        "seed": seed,
        "engines": list(engines) if engines is not None else None,
    }
    state = _load_state(out)
    _check_settings(out, state, corpus_settings, list(overrides))
    state.update(version=_STATE_VERSION, corpus=corpus_settings, overrides=list(overrides))
    timings: dict[str, float] = {}  # this call's
    seconds: dict[str, float] = state.setdefault("seconds", {})  # what the folder's outputs took
    reused: list[str] = []
    data, run = out / DATA, out / RUN

    # 1. corpus
    if state.get("corpus_complete"):
        reused.append("synth")
        cb.on_stage("synth", f"corpus: reusing {data}")
    else:
        _save_state(out, state)  # before any file: a rerun knows the folder is ours
        cb.on_stage("synth", f"synthesising {speakers} speakers x {utterances} utterances into {data}")
        start = time.perf_counter()
        synth = synthesize_corpus(
            data,
            n_speakers=speakers,
            n_utterances=utterances,
            seed=seed,
            engines=engines,
            overwrite=data.exists(),  # only an unfinished synthesis of ours gets here
            progress=cb.on_progress,
        )
        timings["synth"] = seconds["synth"] = time.perf_counter() - start
        engines_used = sorted({s.voice.engine for s in synth.speakers})
        state.update(corpus_complete=True, corpus_seconds=synth.seconds, corpus_engines=engines_used)
        _save_state(out, state)

    # 2. training
    checkpoint = run / LAST
    done = _trained_step(checkpoint)
    if done is not None and done >= total_steps:
        reused.append("train")
        cb.on_stage("train", f"training: reusing {checkpoint} (step {done})")
        step = done
    else:
        if done is None and run.exists():
            shutil.rmtree(run)  # a run killed before its first checkpoint: nothing to resume
        state.pop("evaluated", None)  # whatever was evaluated is not this checkpoint
        cb.on_stage("train", f"training the demo recipe for {total_steps} steps into {run}")
        start = time.perf_counter()
        try:
            result = train(
                recipe,
                data,
                run,
                steps=total_steps,
                resume=done is not None,
                device=device,
                callback=_TrainRelay(cb),
            )
        finally:
            timings["train"] = time.perf_counter() - start
            seconds["train"] = seconds.get("train", 0.0) + timings["train"]  # over resumes
            _save_state(out, state)
        step = result.step
        if result.interrupted:
            return DemoResult(out, checkpoint, step, total_steps, True, timings=timings, reused=tuple(reused))

    # 3. encode, decode, convert, score (reused for the same checkpoint step and settings)
    eval_settings = {"step": step, "max_utterances": max_utterances, "conversions": conversions, "seed": seed}
    evaluation: dict[str, Any] | None = None
    if state.get("evaluated") == eval_settings and (out / EVAL_JSON).is_file() and (out / AUDIO).is_dir():
        evaluation = _read_json(out / EVAL_JSON)
    if evaluation is not None:
        reused += ["evaluate", "tokens"]
        cb.on_stage("evaluate", f"evaluation: reusing {out / EVAL_JSON} (step {step})")
    else:
        state.pop("evaluated", None)
        cb.on_stage(
            "evaluate",
            f"up to {max_utterances} held-out utterances: encode, decode, convert each to "
            f"{conversions} other speakers, score; WAVs into {out / AUDIO}",
        )
        start = time.perf_counter()
        evaluation = _evaluate(checkpoint, data, out / AUDIO, max_utterances, conversions, seed, device, cb)
        write_text_atomic(out / EVAL_JSON, json.dumps(evaluation, indent=2) + "\n")
        timings["evaluate"] = seconds["evaluate"] = time.perf_counter() - start

        cb.on_stage("tokens", f"writing their token files to {out / TOKENS}")
        start = time.perf_counter()
        state["tokens"] = _write_tokens(checkpoint, data, out / TOKENS, evaluation, device)
        timings["tokens"] = seconds["tokens"] = time.perf_counter() - start
        state["evaluated"] = eval_settings
        _save_state(out, state)

    # 4. report
    cb.on_stage("report", f"writing {out / REPORT}")
    start = time.perf_counter()
    report = write_report(
        out / REPORT,
        evaluation=evaluation,
        audio_dir=out / AUDIO,
        run_dir=run,
        recipe=load_checkpoint(checkpoint).recipe,
        step=step,
        corpus=_describe_corpus(state),
        timings=seconds,
        tokens=state.get("tokens"),
        title="vqspeech demo",
    )
    timings["report"] = time.perf_counter() - start
    return DemoResult(
        out_dir=out,
        checkpoint=checkpoint,
        step=step,
        total_steps=total_steps,
        interrupted=False,
        report=report,
        evaluation=out / EVAL_JSON,
        aims=check_aims(evaluation),
        metrics=evaluation,
        timings=timings,
        reused=tuple(reused),
    )


# --------------------------------------------------------------------------------------------
# Stages


class _TrainRelay:
    """Passes training's progress on, except its stop notice: that one says "continue with
    --resume", and the demo continues by running it again (:attr:`DemoResult.interrupted`)."""

    def __init__(self, callback: DemoCallback) -> None:
        self.callback = callback

    def on_start(self, start_step: int, total_steps: int) -> None:
        self.callback.on_start(start_step, total_steps)

    def on_step(self, metrics: StepMetrics) -> None:
        self.callback.on_step(metrics)

    def on_eval(self, metrics: EvalMetrics) -> None:
        self.callback.on_eval(metrics)

    def on_message(self, text: str) -> None:
        if not text.startswith("stopped at step"):
            self.callback.on_message(text)


def _trained_step(checkpoint: Path) -> int | None:
    """The step ``checkpoint`` was saved at, or None if there is none."""
    if not checkpoint.is_file():
        return None
    return int(load_checkpoint(checkpoint).training.get("step", 0))


def _write_tokens(
    checkpoint: Path, data: Path, folder: Path, evaluation: Mapping[str, Any], device: str
) -> dict[str, float]:
    """Token files ``folder/<speaker>/<utterance>.vqt`` of the utterances ``evaluation`` decoded.

    Returns totals for the report: ``files``, ``bytes`` and ``seconds`` (of audio).
    """
    codec = Codec.load(checkpoint, device)
    corpus = open_corpus(data, sample_rate=codec.sample_rate)
    by_id = {utt.id: utt for utt in corpus.utterances}
    evaluated = [by_id[s["utterance"]] for s in evaluation.get("samples", []) if s.get("utterance") in by_id]
    shutil.rmtree(folder, ignore_errors=True)  # only the current evaluation's tokens in it
    size, seconds = 0, 0.0
    for utt in evaluated:
        target = folder / utt.speaker / f"{Path(utt.id).name}{TOKEN_SUFFIX}"
        tokens = encode_file(codec, utt.path, speaker=utt.speaker)
        write_token_output(tokens, target, "vqt", overwrite=True)
        size += target.stat().st_size
        seconds += tokens.header.num_samples / tokens.header.sample_rate
    return {"files": len(evaluated), "bytes": size, "seconds": seconds}


def _evaluate(
    checkpoint: Path,
    data: Path,
    audio_dir: Path,
    max_utterances: int,
    conversions: int,
    seed: int,
    device: str,
    cb: DemoCallback,
) -> dict[str, Any]:
    """:func:`vqspeech.evaluation.evaluate_model` into a fresh ``audio_dir``, as a plain dict."""
    from vqspeech.evaluation import evaluate_model

    shutil.rmtree(audio_dir, ignore_errors=True)  # no stale WAVs from an earlier evaluation
    audio_dir.mkdir(parents=True)
    report = evaluate_model(
        checkpoint,
        data,
        max_utterances=max_utterances,
        conversions_per_utterance=conversions,
        seed=seed,
        audio_dir=audio_dir,
        progress=cb.on_message,
        device=device,
    )
    return dict(report.to_dict())


def _describe_corpus(state: Mapping[str, Any]) -> str:
    corpus = state.get("corpus") or {}
    line = f"{corpus.get('speakers')} synthetic speakers x {corpus.get('utterances')} utterances"
    seconds, engines = state.get("corpus_seconds"), state.get("corpus_engines")
    if seconds:
        line += f" ({float(seconds) / 60:.1f} min of speech"
        line += f" from {', '.join(engines)})" if engines else ")"
    return line


# --------------------------------------------------------------------------------------------
# The folder's record (demo.json)


def _check_settings(
    out: Path, state: Mapping[str, Any], corpus: Mapping[str, Any], overrides: list[str]
) -> None:
    """Refuse to mix: a corpus or run made with other settings is not silently replaced."""
    has_corpus = bool(state.get("corpus_complete"))
    has_run = (out / RUN / LAST).is_file()
    if not state and (has_run or ((out / DATA).exists() and any((out / DATA).iterdir()))):
        raise ConfigError(
            f"{out} holds files that are not a vqspeech demo ({STATE} is missing); pick another folder"
        )
    before = state.get("corpus")
    if (has_corpus or has_run) and before is not None and before != dict(corpus):
        raise ConfigError(
            f"{out} holds a demo made with {_settings_text(before)}, not {_settings_text(corpus)}; "
            "pick another folder, or delete this one to start over"
        )
    if has_run and state.get("overrides", []) != overrides:
        raise ConfigError(
            f"{out} holds a run trained with --set {' '.join(state.get('overrides', [])) or '(none)'}; "
            "pick another folder, or delete this one to start over"
        )


def _settings_text(corpus: Mapping[str, Any]) -> str:
    text = f"--speakers {corpus.get('speakers')} --utterances {corpus.get('utterances')}"
    if corpus.get("seed"):
        text += f" seed {corpus['seed']}"
    if corpus.get("engines"):
        text += f" engines {','.join(corpus['engines'])}"
    return text


def _load_state(out: Path) -> dict[str, Any]:
    path = out / STATE
    if not path.is_file():
        return {}
    state = _read_json(path)
    if state is None or state.get("version") != _STATE_VERSION:
        raise ConfigError(f"{path} is unreadable or from another version; delete {out} to start over")
    return state


def _save_state(out: Path, state: Mapping[str, Any]) -> None:
    write_text_atomic(out / STATE, json.dumps(state, indent=2) + "\n")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
