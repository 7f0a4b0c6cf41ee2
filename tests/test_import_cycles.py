"""tools/import_cycles.py: no import cycle, the layering holds, and the tool would say if not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "import_cycles.py"


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), str(root)], capture_output=True, text=True, check=False)


def test_the_project_has_no_import_cycle_and_keeps_its_layering() -> None:
    result = _run(ROOT)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("no import cycle")


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"vqspeech/__init__.py": "", "cli/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_cycle_through_a_late_import_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "vqspeech/a.py": "from vqspeech.b import x\n",
            "vqspeech/b.py": "def x():\n    from vqspeech import c\n",
            "vqspeech/c.py": "from . import a\n",
            "vqspeech/d.py": "import vqspeech.a\n",  # imports into the cycle, not part of it
        },
    )
    result = _run(root)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["import cycle: vqspeech.a <-> vqspeech.b <-> vqspeech.c"]


def test_layering_breaches_are_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "vqspeech/tokens.py": "import torch\n",
            "vqspeech/x.py": "from vqspeech_cli.errors import boundary\nimport rich\n",
            "cli/ok.py": "import typer\nimport torch\nfrom vqspeech import tokens\n",
        },
    )
    result = _run(root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all("must not import" in line for line in lines)
    assert any(line.startswith("vqspeech.tokens imports torch") for line in lines)
    assert sum(line.startswith("vqspeech.x imports") for line in lines) == 2


def test_the_command_line_starts_without_the_heavy_optional_modules() -> None:
    # Every `vqspeech` call pays its imports before any work: scipy.signal alone is ~1 s, about
    # what torch costs. Commands that need one of these import it when they run.
    heavy = ["scipy.signal", "librosa", "numba", "resemblyzer", "speechmos", "onnxruntime", "pesq", "sklearn"]
    code = f"import sys, vqspeech_cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
