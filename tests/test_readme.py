"""The README fits a page, every command in it is accepted by the program it names, its
Python parses and names only what the package has, and every link of the README and docs/
resolves."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 260


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def readme_commands() -> list[list[str]]:
    """Every command of the README's bash blocks as an argument list (continuation lines
    joined, comments dropped)."""
    commands = []
    for block in code_blocks(README.read_text(), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def program_and_argv(words: list[str]) -> tuple[str, list[str]]:
    """("main", argv), ("tools/<name>", argv), ("benchmarks/<name>", argv) or ("make",
    targets)."""
    if words[0] == "make":
        return "make", words[1:]
    if words[0] == "torchrun":
        at = words.index("main.py")
        return "main", words[at + 1:]
    assert words[0] == "python", f"a README command this test does not know: {words}"
    if words[1] == "main.py":
        return "main", words[2:]
    if words[1] == "-m":
        assert words[2].startswith("benchmarks."), words
        return words[2].replace(".", "/"), words[3:]
    assert words[1].startswith("tools/"), words
    return words[1][: -len(".py")], words[2:]


def test_the_readme_fits_a_page():
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_the_readme_has_commands_for_each_job():
    programs = {program_and_argv(w)[0] for w in readme_commands()}
    assert {"make", "main", "tools/predict", "tools/export"} <= programs


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w)[:60])
def test_every_readme_command_is_accepted(words, capsys):
    program, argv = program_and_argv(words)
    if program == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in argv:
            assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), target
        return
    if program == "main":
        from detr_irpe.options import build_parser

        build_parser().parse_args(argv)  # names, types and choices (a SystemExit on error)
        if "--config" in argv:
            assert (ROOT / argv[argv.index("--config") + 1]).is_file()
        return
    assert (ROOT / f"{program}.py").is_file(), program
    tool = importlib.import_module(program.replace("/", "."))
    with pytest.raises(SystemExit) as done:
        tool.main(["--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    for flag in (w for w in argv if w.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", help_text), f"{program} has no {flag}"
    if hasattr(tool, "parse_args"):
        tool.parse_args(argv)  # values too (types, choices, counts)


def test_the_readme_python_parses_and_names_the_api():
    import detr_irpe

    text = README.read_text()
    blocks = code_blocks(text, "python")
    assert blocks
    for block in blocks:
        ast.parse(block)
    for name in re.findall(r"detr_irpe\.(\w+(?:\.\w+)?)", text):
        obj = detr_irpe
        for part in name.split("."):
            obj = getattr(obj, part, None) or importlib.import_module(f"{obj.__name__}.{part}")
        assert obj is not None, name


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: p.name)
def test_every_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"https?://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in heading_anchors(path), f"{page.name}: no heading for {target}"
