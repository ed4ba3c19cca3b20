"""Docs show paths a reader can use: the shared data relative to the repository
(``../shared/data/...``), never the absolute paths of the machine they were written on."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home/\w+)/")


def test_docs_have_no_machine_paths():
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(files) > 1
    found = [f"{f.relative_to(REPO)}:{n}: {line.strip()}" for f in files
             for n, line in enumerate(f.read_text().splitlines(), 1) if MACHINE_PATH.search(line)]
    assert not found, "machine paths in docs (use ../shared/data/... or a path relative to the repository):\n" + "\n".join(found)


# A citation of a section: `docs/Model.md, "Known weaknesses"` (or 'single quotes', with or
# without the comma), in code, specs, scripts and docs alike; the section text starts with a
# capital letter or a backtick, which keeps code such as `"README.md").read_text()` out.
CITATION = re.compile(r"""(?:docs/)?([A-Z]\w*\.md),?\s*\\?["']([A-Z`][^"'\\()]{3,})""")
CITING = (".py", ".md", ".json", ".sh", ".js")


def _section_names(doc: Path) -> list[str]:
    """Headings and bold run-in leads of a doc, without markdown marks: what a citation names."""
    text = doc.read_text()
    heads = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    bold = re.findall(r"\*\*([^*]+)\*\*", text)
    return [re.sub(r"\s+", " ", re.sub(r"[`*]", "", s)).strip() for s in heads + bold]


def _citations(text: str):
    """(doc name, section) of every citation, lines joined first since citations wrap."""
    joined = re.sub(r"\s*\n\s*#?\s*", " ", text)
    for m in CITATION.finditer(joined):
        yield m.group(1), re.sub(r"\s+", " ", re.sub(r"[`*]", "", m.group(2))).strip()


def test_cited_doc_sections_exist():
    """Code and docs send readers to "docs/X.md, 'Section'"; a section renamed or moved to
    another page (as the LOGO record was) must not leave them pointing at nothing."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    docs = {p.name: p for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")]}
    names = {name: _section_names(path) for name, path in docs.items()}
    checked, broken = 0, []
    for rel in tracked:
        if not rel.endswith(CITING) or not (REPO / rel).is_file():
            continue
        for doc, section in _citations((REPO / rel).read_text(errors="ignore")):
            if doc not in names:
                continue
            checked += 1
            if not any(s.startswith(section) or (len(s) > 12 and section.startswith(s)) for s in names[doc]):
                broken.append(f"{rel}: {doc}, {section!r}")
    assert checked > 30, f"only {checked} citations found: the pattern no longer matches how docs are cited"
    assert not broken, "citations of doc sections that do not exist:\n" + "\n".join(broken)


def test_citation_check_catches_a_moved_section(tmp_path):
    """The check above reads a citation as such and fails when its section is gone."""
    doc = tmp_path / "Guide.md"
    doc.write_text("# Guide\n\n## Kept section\n\n**A bold lead.** text\n")
    names = _section_names(doc)
    cites = list(_citations('see docs/Guide.md, "Kept section" and Guide.md \'A bold lead\'\n'
                            '# and docs/Guide.md,\n# "Moved\n# section"'))
    assert cites == [("Guide.md", "Kept section"), ("Guide.md", "A bold lead"), ("Guide.md", "Moved section")]
    assert [any(s.startswith(sec) for s in names) for _, sec in cites] == [True, True, False]
