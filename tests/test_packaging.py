"""What a non-editable ``pip install .`` ships: every package folder, and the bundled model's files.

``[tool.setuptools] packages`` is an explicit list, so a new subpackage left out of it works in
the editable install every test uses and is missing from a wheel; this keeps the list complete.
"""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed() -> None:
    dirs = {"vqspeech_cli": "cli", **SETUPTOOLS.get("package-dir", {})}
    found = set()
    for name, folder in (("vqspeech", "vqspeech"), ("vqspeech_cli", dirs["vqspeech_cli"])):
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    assert found <= set(SETUPTOOLS["packages"]), sorted(found - set(SETUPTOOLS["packages"]))


def test_the_bundled_model_is_package_data() -> None:
    patterns = SETUPTOOLS["package-data"]["vqspeech"]
    assert {"models/*.pt", "models/*.json"} <= set(patterns)
    from vqspeech.bundled import BUNDLED_MODEL, card_path

    assert BUNDLED_MODEL.parent == ROOT / "vqspeech" / "models"
    assert BUNDLED_MODEL.match("models/*.pt") and card_path(BUNDLED_MODEL).match("models/*.json")
