"""The simulator's option tables are text files, one row a line, in [sections]: this reads them (pure).

Blank lines and `#` comments are skipped; a `[name]` line starts a section; every other line is a row of
words. raspicli.py and boost_cli.py give the words their meaning.
"""

from __future__ import annotations

from pathlib import Path


def read_sections(path: Path) -> dict[str, list[list[str]]]:
    """Section name -> its rows, each a list of words, in file order."""
    sections: dict[str, list[list[str]]] = {}
    rows: list[list[str]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            rows = sections.setdefault(line[1:-1], [])
        else:
            rows.append(line.split())
    return sections
