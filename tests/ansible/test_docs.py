"""The docs live in the repository: every relative link in README.md and docs/*.md resolves inside it.

Reproduction (issue 13): README linked ../shared/DESIGN.md and ../shared/STYLE.md,
which exist next to one working copy and in no clone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) and [text](target "title"); reference-style definitions "[x]: target".
INLINE = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def links(doc: Path) -> list[str]:
    text = CODE.sub("", doc.read_text())
    return INLINE.findall(text) + REFERENCE.findall(text)


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the headings of doc."""
    result = set()
    for heading in re.findall(r"^#+\s+(.*)$", CODE.sub("", doc.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        result.add(slug)
    return result


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    bad = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.is_relative_to(REPO):
            bad.append(f"{target}: leaves the repository")
        elif not resolved.exists():
            bad.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            bad.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    assert not bad, f"{doc.relative_to(REPO)}: " + "; ".join(bad)


def test_readme_links_only_into_the_repository() -> None:
    readme = links(REPO / "README.md")
    assert readme, "README links nowhere: the link pattern is broken"
    outside = [t for t in readme if ".." in Path(t.partition("#")[0]).parts or t.startswith("/")]
    assert not outside, outside


def test_readme_points_at_the_design_and_style_in_docs() -> None:
    readme = links(REPO / "README.md")
    assert "docs/design.md" in {t.partition("#")[0] for t in readme}
    assert "docs/style.md" in readme
