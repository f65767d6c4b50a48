"""The project's documentation as tests read it: the front page (README.md) followed by every page in docs/.

Tests that look for a command line or a number in "the README" read this text, so a section moved from the
front page to a docs page is still found.
"""
from __future__ import annotations

import glob
import os
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRONT_PAGE = os.path.join(ROOT, "README.md")
DOCS_DIR = os.path.join(ROOT, "docs")


def documentation_pages() -> List[str]:
    """Paths of the front page and then the docs pages in name order (a stable order for joined text)."""
    return [FRONT_PAGE] + sorted(glob.glob(os.path.join(DOCS_DIR, "*.md")))


def front_page_text() -> str:
    with open(FRONT_PAGE, encoding="utf-8") as f:
        return f.read()


def documentation_text() -> str:
    """README.md and docs/*.md joined by newlines."""
    texts = []
    for path in documentation_pages():
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    return "\n".join(texts)
