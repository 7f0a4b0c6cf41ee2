"""vqspeech: discrete speech representations with a VQ-VAE (van den Oord et al., NIPS 2017).

The public API is small: build or load a :class:`~vqspeech.model.VQVAE`, then ``encode`` audio
to codes and ``decode`` codes (plus a speaker) back to audio. Importing the package has no
side effects and does not import torch until a submodule that needs it is imported.
"""

__version__ = "0.1.0"
