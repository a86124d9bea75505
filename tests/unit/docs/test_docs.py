"""The docs that are generated from the code stay in step with it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_divergences_page_lists_every_mark_in_the_code() -> None:
    spec = importlib.util.spec_from_file_location(
        "list_divergences", ROOT / "dev" / "list_divergences.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    expected = module.render(ROOT)

    assert (ROOT / "docs" / "divergences.md").read_text() == expected, (
        "docs/divergences.md is stale: run .venv/bin/python dev/list_divergences.py "
        "> docs/divergences.md"
    )
