"""Datasets (VCTK 0.80 / 0.92, speaker folders, manifests) and demo-corpus synthesis."""
