"""Docs show paths a reader can use: the shared data relative to the repository
(``../shared/data/...``), never the absolute paths of the machine they were written on."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home/\w+)/")


def test_docs_have_no_machine_paths():
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(files) > 1
    found = [f"{f.relative_to(REPO)}:{n}: {line.strip()}" for f in files
             for n, line in enumerate(f.read_text().splitlines(), 1) if MACHINE_PATH.search(line)]
    assert not found, "machine paths in docs (use ../shared/data/... or a path relative to the repository):\n" + "\n".join(found)
