"""Every file the docs point to exists: the relative links of README.md and docs/*.md (with their
#anchors), and every repository path they or .env.example name (``deploy/...``, ``alert_rules/*.yml``)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / ".env.example"]
# The repository's top level (fixed by the product): a word starting with one of these and a
# slash is a path into the checkout.
TOP = ("exporter", "alert_rules", "dashboards", "deploy", "docs", "tests", "bench", ".ci")
PATH = re.compile(r"(?<![\w./~-])((?:%s)/[\w./*@<>-]*)" % "|".join(re.escape(top) for top in TOP))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in markdown.read_text().splitlines() if line.startswith("#")}


def named_paths(text: str) -> set[str]:
    found = set()
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".,")
        if "<" not in path:  # tests/test_<module>.py is a pattern, not a file
            found.add(path)
    return found


def missing(doc: Path) -> list[str]:
    text = doc.read_text()
    problems = [path for path in sorted(named_paths(text)) if not list(ROOT.glob(path.rstrip("/")))]
    for target in LINK.findall(text) if doc.suffix == ".md" else []:
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            problems.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target} (no such heading)")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.relative_to(ROOT).as_posix())
def test_every_path_and_link_of_the_doc_exists(doc):
    assert doc.exists()
    assert missing(doc) == []


def test_a_missing_path_or_link_is_found(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("# Title\nSee `deploy/nothing-here.yml`, docs/full-stack.md, `alert_rules/*.yml`,\n"
                   "[ok](#title), [bad](#no-title), [gone](missing.md) and [web](https://example.com/x).\n")
    assert missing(doc) == ["deploy/nothing-here.yml", "docs/full-stack.md", "#no-title (no such heading)",
                            "missing.md"]
