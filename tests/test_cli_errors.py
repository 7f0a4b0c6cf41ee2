"""The CLI's one error boundary: library errors and Ctrl-C become one line and an exit code."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from vqspeech.errors import AudioError
from vqspeech_cli.errors import boundary


def _app(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        with boundary():
            raise exc

    return app


def test_library_error_is_one_red_line_and_exit_1() -> None:
    result = CliRunner().invoke(_app(AudioError("x.wav: [not] audio")), [])
    assert result.exit_code == 1
    assert result.output.strip() == "error: x.wav: [not] audio"  # brackets are not eaten as markup


def test_ctrl_c_is_one_line_and_exit_130() -> None:
    result = CliRunner().invoke(_app(KeyboardInterrupt()), [])
    assert result.exit_code == 130
    assert result.output.strip() == "interrupted" and "Traceback" not in result.output


def test_a_bug_is_not_swallowed() -> None:
    result = CliRunner().invoke(_app(ZeroDivisionError("bug")), [])
    assert result.exit_code != 0 and isinstance(result.exception, ZeroDivisionError)
