"""Datasets (VCTK 0.80 / 0.92, speaker folders, manifests) and demo-corpus synthesis.

Modules, one responsibility each (only ``dataset`` and ``batches`` import torch):

* ``corpus``   - :func:`~vqspeech.data.corpus.open_corpus` detects the layout and returns a
  :class:`~vqspeech.data.corpus.Corpus` (utterances, speaker table, deterministic split).
* ``vctk``, ``folder`` - the layouts: VCTK releases with their quirks; speaker folders; manifests.
* ``cache``    - converts every source once to 16-bit mono WAV at the model's rate.
* ``speakers`` - :class:`~vqspeech.data.speakers.SpeakerTable`: name <-> id, JSON-safe.
* ``dataset``  - random training crops and whole validation utterances (torch datasets).
* ``batches``  - the training loop's view: step ``s``'s batch is a function of ``(seed, s, rank)``.
* ``augment``, ``augment_config`` - channel and room augmentation of training crops (issue 17):
  band limits, EQ, noise, babble, reverberation, gain, clipping, quantisation; off by default.
* ``synth``, ``voices``, ``sentences`` - the synthetic demo corpus (eSpeak NG, flite, Festival).
"""
