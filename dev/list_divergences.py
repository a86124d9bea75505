"""Print docs/divergences.md: every `DIVERGENCE(openwhisk)` mark in src/, one bullet
each, so the list in the docs cannot drift from the code (a test compares them)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARK = "DIVERGENCE(openwhisk):"
ROOT = Path(__file__).resolve().parents[1]


def marks(root: Path = ROOT) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in sorted((root / "src").rglob("*")):
        if path.suffix not in (".py", ".js") or "_pb2" in path.name:
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if MARK not in line:
                continue
            comment = line.lstrip().startswith(("#", "//"))
            text = [line.split(MARK, 1)[1].strip()]
            for follow in lines[i + 1 :]:
                stripped = follow.strip()
                if comment and not stripped.startswith(("#", "//")):
                    break
                if not comment and (not stripped or stripped.startswith('"""')):
                    break
                text.append(re.sub(r"^(#|//)\s?", "", stripped))
            rel = path.relative_to(root).as_posix()
            found.append((rel, " ".join(t for t in text if t).rstrip('"')))
    return found


def render(root: Path = ROOT) -> str:
    out = [
        "# Where Wisp departs from OpenWhisk",
        "",
        "Every deliberate departure is marked `DIVERGENCE(openwhisk)` in the code;",
        "this page is generated from those marks by `dev/list_divergences.py`.",
        "",
    ]
    for rel, text in marks(root):
        out.append(f"- `{rel}`: {text}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
