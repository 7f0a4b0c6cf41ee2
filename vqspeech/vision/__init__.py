"""Image and video recipes on the speech codec's core (issue #9; paper sections 4.2 and 4.4).

The same :class:`~vqspeech.nn.quantizer.VectorQuantizer` and the same training loop
(:func:`vqspeech.loop.fit`) serve speech, images and video. Submodules:

* :mod:`~vqspeech.vision.config`: ``ImageRecipe`` / ``VideoRecipe``, built-ins ``cifar10``,
  ``digits``, ``video``; :func:`~vqspeech.vision.config.load_vision_recipe`.
* :mod:`~vqspeech.vision.nn`: 2-d VQ-VAE, gated PixelCNN, latent-frame prior.
* :mod:`~vqspeech.vision.data`: CIFAR-10 from ``cifar-10-batches-py``; scikit-learn's digits.
* :mod:`~vqspeech.vision.video_env`: the action-conditioned toy environment.
* :mod:`~vqspeech.vision.train`: :func:`train_vision`, :func:`train_vision_prior`.
* :mod:`~vqspeech.vision.sample`: bits/dim, sample and reconstruction grids, video rollouts.

Importing this package imports no torch; import the submodules you need.
"""

from __future__ import annotations

from vqspeech.vision.config import is_vision_recipe, load_vision_recipe

__all__ = ["is_vision_recipe", "load_vision_recipe"]
