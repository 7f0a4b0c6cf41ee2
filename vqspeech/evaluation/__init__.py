"""Objective measures of a VQ-VAE: reconstructions, codes, voice conversion, speaker leakage.

:func:`evaluate_model` runs them all on the held-out utterances of a corpus (the split training
used, so none of them was seen) and returns an :class:`EvalReport`; ``vqspeech eval`` prints it.
The pieces are usable alone, one module per stage:

* :mod:`~vqspeech.evaluation.measures`: signal measures of reconstructions, and code statistics;
* :mod:`~vqspeech.evaluation.speakers`: linear speaker classifiers and the leakage probe;
* :mod:`~vqspeech.evaluation.run`: :func:`evaluate_model`, the run over a corpus in stages, and its report;
* :mod:`~vqspeech.evaluation.unseen`: the stage for speakers the model never trained on;
* :mod:`~vqspeech.evaluation.common`: what the stages share (utterance picking, batch decoding);
* :mod:`~vqspeech.evaluation.aims`: issue 6's aims and :func:`check_aims`;
* :mod:`~vqspeech.evaluation.quality`: DNSMOS and speaker similarity from optional packages;
* :mod:`~vqspeech.evaluation.transcode`: :func:`score_recordings`, any recordings through a model
  and back, scored against themselves (``vqspeech score``).

Reconstructions compare a reference and a degraded waveform of the same length at the same rate
(float ``[T]`` numpy arrays):

* ``log_mel_distance``: mean absolute difference of 80-band log-mel spectrograms in dB
  (``20 log10`` of mel magnitudes; 1024-point FFT, 256 hop, at 16 kHz). 0 is identical.
* ``mel_cepstral_distortion``: MCD in dB over mel-cepstra 1..13 (c0, the loudness, is left
  out), frame by frame without time warping (reconstructions are aligned with their source),
  over the frames where the reference is within 40 dB of its loudest: silent frames would
  otherwise dominate it with noise-floor differences nobody hears.
* ``stoi``: short-time objective intelligibility (Taal et al. 2011) via ``pystoi``, in [0, 1].
  For scale: noise shaped by the speech's loudness envelope scores ~0.6 on our corpus.
* ``pesq_wb``: wide-band PESQ (ITU-T P.862.2) MOS-LQO in [1.04, 4.64] via the optional ``pesq``
  package (``pip install 'vqspeech[pesq]'``); None where it is not installed.
* ``dnsmos_ovrl`` (of the reconstruction and of the reference) and ``speaker_similarity``:
  DNSMOS P.835 overall quality (``speechmos``, ``pip install 'vqspeech[dnsmos]'``) and the
  cosine of Resemblyzer speaker embeddings (``pip install 'vqspeech[spkr]'``); None without them.

Codes (:func:`code_stats`): how many of the K codes the held-out speech uses, the empirical
unigram entropy in bits per token and bits/s, its perplexity ``2 ** entropy`` (K when every
code is equally likely), against the raw bitrate ``token_rate * ceil(log2 K)``.

Conversion and leakage (issue 6) use linear classifiers (:func:`fit_linear_classifier`,
multinomial logistic regression on standardised features) trained on *real* utterances of the
corpus's training split, never on model output:

* a speaker classifier on :func:`speaker_features` (mean mel-cepstrum of the speech frames and
  median log-F0) decides whether converted audio sounds like its target or still like its source;
* the leakage probe classifies speakers from per-utterance code histograms: accuracy near
  chance means the codes carry little speaker identity, which is the paper's claim (section 4.3).
  A whole utterance's histogram names a synthetic voice almost always, so the probe also gives
  :func:`token_speaker_information`, the bits of speaker identity in one code, which does not
  saturate and compares models (a speaker encoder must not make the codes carry more).

Unseen speakers (issue 7, :class:`UnseenSpeakerScores`): for a model with a speaker encoder and a
corpus with speakers it never trained on (``data.valid_speakers``, or speakers it does not know),
reconstructions voiced by each utterance's own speaker vector against the nearest table speaker,
and zero-shot conversions of training speakers toward an unseen voice given one recording of it.
"""

from vqspeech.evaluation.aims import AIMS, STOI_AIM, TARGET_RATE_AIM, Aim, AimResult, check_aims
from vqspeech.evaluation.measures import (
    CodeStats,
    PairScores,
    ReconstructionScores,
    code_histogram,
    code_stats,
    log_mel_distance,
    median_f0,
    mel_cepstral_distortion,
    pesq_available,
    pesq_wb,
    score_pair,
    stoi,
)
from vqspeech.evaluation.quality import (
    DnsmosScores,
    dnsmos,
    dnsmos_available,
    speaker_embedding,
    speaker_similarity,
    speaker_similarity_available,
)
from vqspeech.evaluation.run import ConversionScores, EvalReport, evaluate_model
from vqspeech.evaluation.speakers import (
    SPEAKER_CEPSTRA,
    LeakageScores,
    LinearClassifier,
    fit_linear_classifier,
    leakage_probe,
    speaker_features,
    token_speaker_information,
)
from vqspeech.evaluation.unseen import UnseenSpeakerScores

__all__ = [
    "AIMS",
    "SPEAKER_CEPSTRA",
    "STOI_AIM",
    "TARGET_RATE_AIM",
    "Aim",
    "AimResult",
    "CodeStats",
    "ConversionScores",
    "DnsmosScores",
    "EvalReport",
    "LeakageScores",
    "LinearClassifier",
    "PairScores",
    "ReconstructionScores",
    "UnseenSpeakerScores",
    "check_aims",
    "code_histogram",
    "code_stats",
    "dnsmos",
    "dnsmos_available",
    "evaluate_model",
    "fit_linear_classifier",
    "leakage_probe",
    "log_mel_distance",
    "median_f0",
    "mel_cepstral_distortion",
    "pesq_available",
    "pesq_wb",
    "score_pair",
    "speaker_embedding",
    "speaker_features",
    "speaker_similarity",
    "speaker_similarity_available",
    "stoi",
    "token_speaker_information",
]
