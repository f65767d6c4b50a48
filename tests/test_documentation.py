"""The front page and docs/ pages: links resolve, every command line lives in exactly one place."""
from __future__ import annotations

import os
import re

import pytest

from tests.docs_text import DOCS_DIR, ROOT, documentation_pages, documentation_text, front_page_text

ENTRY_SCRIPTS = ["train_teacher.py", "train_student.py", "validation.py", "convert.py", "search.py"]
MARKDOWN_LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def command_lines(text):
    """Shell lines shown in fenced ``bash`` blocks or indented code blocks, with a trailing comment dropped."""
    lines, fenced, continued = [], False, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        code = line if fenced else (line[4:] if line.startswith("    ") else None)
        if code is None:
            continue
        code = code.split("  #")[0].strip()
        if continued:
            # a backslash-continued command is one command: its first lines alone repeat across examples
            lines[-1] = lines[-1][:-1].rstrip() + " " + code
        elif re.match(r"(python|bash|torchrun|source) ", code):
            lines.append(code)
        else:
            continue
        continued = code.endswith("\\")
    return lines


def test_ci_test_command_is_on_the_front_page():
    # .ci/run runs "the README's test command"; it must not move into docs/
    assert "bash scripts/test.sh" in command_lines(front_page_text())


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_front_page_shows_a_command_of_every_entry_script(script):
    assert any(line.startswith(f"python {script} ") for line in command_lines(front_page_text())), script


def test_every_docs_page_is_linked_from_the_front_page():
    targets = set(MARKDOWN_LINK.findall(front_page_text()))
    for path in documentation_pages()[1:]:
        assert f"docs/{os.path.basename(path)}" in targets, path


@pytest.mark.parametrize("page", documentation_pages(), ids=os.path.basename)
def test_relative_links_resolve(page):
    with open(page, encoding="utf-8") as f:
        text = f.read()
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
        assert os.path.exists(resolved), f"{os.path.relpath(page, ROOT)} links to missing {target}"


def test_every_command_line_appears_in_exactly_one_place():
    lines = command_lines(documentation_text())
    repeated = sorted({line for line in lines if lines.count(line) > 1})
    assert repeated == []
    assert len(lines) >= 34  # the 32 commands of the pre-split README plus the front page's convert and search


def test_docs_pages_exist_for_the_moved_sections():
    names = sorted(os.listdir(DOCS_DIR))
    for name in ["benchmarks.md", "datasets.md", "developer.md", "outputs.md", "seed_methods.md",
                 "speed_and_scale.md"]:
        assert name in names


def front_page_example(script):
    return next(line for line in command_lines(front_page_text()) if line.startswith(f"python {script} "))


@pytest.mark.parametrize("script", ["convert.py", "validation.py", "search.py"])
def test_front_page_example_flags_are_the_scripts_flags(script):
    # the front page's own examples (not copied from a seed README) must not drift from the parsers
    # the scripts' parsers: convert.py keeps its own, validation.py and search.py build theirs in assembly/
    from assembly.evaluate import parser as validation_parser
    from assembly.search import search_parser
    import convert
    parser = {"convert.py": convert.parser, "validation.py": validation_parser, "search.py": search_parser}[script]()
    args = front_page_example(script).split()[2:]
    opt = parser.parse_args(args)  # an unknown or misspelt flag exits with status 2
    if script == "convert.py":
        assert (opt.arch, opt.blocktype, opt.save) == ("represnet32", "AMBB", "represnet32_deploy.pth")
    elif script == "search.py":
        assert (opt.model_s, opt.block_depth, opt.select_on) == ("myresnet20", "3,3,3", "val")
    else:
        assert opt.model == "resnet32x4"
