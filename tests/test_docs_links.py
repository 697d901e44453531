"""Relative links in README.md and docs/*.md point at files that exist, and the README's
docs index names every page of docs/."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: ``[text](target)`` and ``![alt](target)``; the target ends at whitespace or ``)``.
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(page: Path) -> list[str]:
    """Link targets of ``page`` outside code blocks that are neither URLs nor in-page anchors,
    without their ``#anchor``."""
    text = FENCE.sub("", page.read_text())
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t.split("#", 1)[0] for t in targets
            if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def test_relative_links_point_at_files_that_exist():
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages()
              for target in relative_links(page) if not (page.parent / target).exists()]
    assert broken == []


def test_readme_links_every_docs_page():
    linked = {(ROOT / t).resolve() for t in relative_links(ROOT / "README.md")}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert missing == []
