"""Decoder families: the protocol (:class:`DecoderFamily`), the registry, and the built-in families.

A new family is one module defining a :class:`DecoderFamily` subclass (and its config
dataclass) plus one ``register(...)`` line below; model, recipes (``model.decoders``,
``model.families.<name>``), ``decode --decoder`` and ``vqspeech info`` pick it up from here.
"""

from __future__ import annotations

from vqspeech.decoders.base import DecoderFamily, FamilyLoss, Lookup, get_family, register, registered
from vqspeech.decoders.spectrogram import SpectrogramFamily
from vqspeech.decoders.vocos import VocosFamily
from vqspeech.decoders.wavenet import WaveNetFamily

__all__ = ["DecoderFamily", "FamilyLoss", "Lookup", "get_family", "register", "registered"]

# registration order is construction order in the model (and so the order of its parameters)
register(WaveNetFamily())
register(SpectrogramFamily())
register(VocosFamily())
