"""The vqspeech command line (imported as ``vqspeech_cli``): thin typer commands over the library."""
