"""The repository stands on its own: what it cites is inside it."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt"}
# Files or trackers that a clone does not have.
OUTSIDE = re.compile(r"spec/(irpe|detr)\.md|\.\./shared|[Ii]ssue #?[0-9]+")
# Paths of the repository's own documents and scripts, as prose cites them.
CITED = re.compile(r"\b((?:docs|tests|tools|configs|detr_irpe)/[\w/.-]*\w\.(?:md|py|toml))\b")


def _text_files():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            path = Path(folder) / name
            if path.suffix in TEXT_SUFFIXES or name == "Makefile":
                yield path


def test_irpe_definition_is_in_the_repository():
    text = (ROOT / "docs" / "irpe.md").read_text()
    for topic in ("piecewise", "bucket", "lookup_table_weight", "Xavier", "fused", "sdpa"):
        assert topic in text, topic


def test_nothing_cites_files_or_trackers_outside_the_repository():
    found = []
    for path in _text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_cited_repository_files_exist():
    missing = []
    for path in _text_files():
        for cited in CITED.findall(path.read_text(errors="replace")):
            if not (ROOT / cited).exists():
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "\n".join(missing)
