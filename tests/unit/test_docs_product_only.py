"""The docs speak of the product only: no files outside the repository, no process artefacts.

README, docs/, bench/README.md, the model card template and the CLI's help texts must not
point at notes or data folders that ship with no clone, nor at issue numbers; nor may the
benchmark scripts' ``--help`` texts.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "a folder outside the repository": re.compile(r"(?<![\w.])(\.\./)?shared/"),
    "internal notes": re.compile(r"FIELD_NOTES", re.IGNORECASE),
    "an issue number": re.compile(r"\bissues?\s*#?\d", re.IGNORECASE),
    "a path on the development machine": re.compile(r"/work/"),
    "the development machine": re.compile(r"developers'? (own )?(machine|checkout)", re.I),
}


def _documents() -> list[Path]:
    files = [
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
    ]
    files.append(ROOT / "src" / "tuneforge" / "card.py")
    files.extend(sorted((ROOT / "src" / "tuneforge" / "cli").glob("*.py")))  # help texts
    return [f for f in files if f.is_file()]


def test_the_documents_exist() -> None:
    names = {str(p.relative_to(ROOT)) for p in _documents()}
    assert {"README.md", "bench/README.md", "docs/benchmarks.md", "src/tuneforge/card.py"} <= names


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_outside_the_product(path: Path) -> None:
    hits = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for what, pattern in FORBIDDEN.items():
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_bench_help_texts_speak_of_the_product_only() -> None:
    """The benchmark scripts' docstrings are their ``--help``; their default paths may stay."""
    hits = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        for what, pattern in FORBIDDEN.items():
            if pattern.search(doc):
                hits.append(f"{path.relative_to(ROOT)}: {what}")
    assert not hits, hits


@pytest.mark.parametrize(
    "line",
    [
        "see `shared/FIELD_NOTES.md`",
        "python bench/x.py --data ../shared/data/sst2/train.csv",
        "## Hosting (issue 4)",
        "measured on /work/main",
        "on the developers' machine",
    ],
)
def test_the_patterns_catch_what_they_should(line: str) -> None:
    assert any(p.search(line) for p in FORBIDDEN.values()), line


def test_the_patterns_leave_product_words_alone() -> None:
    for line in ("src/tuneforge/inference/shared_base.py", "another one with shared storage"):
        assert not any(p.search(line) for p in FORBIDDEN.values()), line
