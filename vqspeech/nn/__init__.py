"""Neural building blocks, each independent of the others: quantiser, encoder, WaveNet decoder."""
