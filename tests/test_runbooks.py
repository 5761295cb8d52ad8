"""The runbooks shipped in docs/runbooks/: every ``source:`` line of baselines.yaml names real runbook headings,
and the index README links every runbook file.

A ``source:`` line lists runbooks by number, comma-separated: ``NNN Title`` or ``NNN Title (qualifier)``. The title
must be a heading of that runbook (a ``#`` heading or a bold list label such as ``3. **Database Issues**:``, outside
code blocks), word for word apart from case, numbering and garbled emoji; the qualifier must appear in that heading's
section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pynomaly_ops import baselines

RUNBOOKS = Path(__file__).resolve().parents[1] / "docs" / "runbooks"
INDEX = RUNBOOKS / "README.md"

CITATION = re.compile(r"^(?P<number>\d{3}) (?P<title>[^()]+?)(?: \((?P<qualifier>[^()]+)\))?$")
HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.+)$")
BOLD_LABEL = re.compile(r"^\s*(?:\d+\.|[-*])\s+\*\*(?P<text>[^*]+)\*\*")
LABEL_LEVEL = 7  # a bold list label sits below every heading
FENCE = "```"


@dataclass(frozen=True)
class Citation:
    number: str
    title: str
    qualifier: str | None


@dataclass(frozen=True)
class Section:
    title: str  # normalised: lower case, no numbering, emoji or trailing colon
    text: str  # the section's lines, its title's included, up to the next title at its level or above


def parse_source(source: str) -> list[Citation]:
    """``"000 Emergency Procedures (High Load), 001 Resource Optimization"`` -> two citations."""
    citations = []
    for part in re.split(r",\s*(?![^()]*\))", source.strip()):
        match = CITATION.match(part.strip())
        if not match:
            raise ValueError(f"not 'NNN Title' or 'NNN Title (qualifier)': {part!r} in {source!r}")
        citations.append(Citation(match["number"], match["title"].strip(), match["qualifier"]))
    return citations


def _normalise(title: str) -> str:
    title = re.sub(r"^[^A-Za-z]+", "", title)  # numbering ("3. "), garbled emoji
    return title.rstrip(" :").strip().lower()


def sections(text: str) -> list[Section]:
    lines = text.splitlines()
    titles: list[tuple[int, int, str]] = []  # (line index, level, title)
    in_code = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(FENCE):
            in_code = not in_code
            continue
        if in_code:
            continue
        if heading := HEADING.match(line):
            titles.append((i, len(heading["hashes"]), heading["text"]))
        elif label := BOLD_LABEL.match(line):
            titles.append((i, LABEL_LEVEL, label["text"]))
    out = []
    for n, (start, level, title) in enumerate(titles):
        end = next((i for i, lv, _ in titles[n + 1 :] if lv <= level), len(lines))
        out.append(Section(_normalise(title), "\n".join(lines[start:end])))
    return out


def runbook_file(number: str) -> Path:
    found = sorted(RUNBOOKS.glob(f"{number}-*.txt"))
    assert len(found) == 1, f"runbook {number}: expected one docs/runbooks/{number}-*.txt, found {found}"
    return found[0]


def check_citation(citation: Citation, text: str) -> None:
    matching = [s for s in sections(text) if s.title == citation.title.lower()]
    assert matching, f"runbook {citation.number} has no heading {citation.title!r}"
    if citation.qualifier:
        assert any(citation.qualifier.lower() in s.text.lower() for s in matching), (
            f"runbook {citation.number}: {citation.qualifier!r} is not in section {citation.title!r}"
        )


def _sources() -> dict[str, str]:
    raw = yaml.safe_load(baselines.DEFAULT_PATH.read_text())
    return {name: body.get("source") for name, body in raw.items()}


SOURCES = _sources()


def test_every_section_names_its_runbooks():
    missing = [name for name, source in SOURCES.items() if not source]
    assert not missing, f"baselines.yaml sections without a source: line: {missing}"


@pytest.mark.parametrize("section", sorted(SOURCES))
def test_source_cites_existing_runbook_headings(section: str):
    for citation in parse_source(SOURCES[section]):
        check_citation(citation, runbook_file(citation.number).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "source",
    [
        "001 Performance Tuning",  # 003's heading, not 001's
        "000 Critical Threshold",  # not word for word
        "003 Application-level metrics",  # a paraphrase
        "000 Database Issues (connection pool)",  # qualifier outside the section
        "000 Emergency Procedures (Traffic Patterns)",  # a sibling section, not this one
        "009 Critical Thresholds",  # no such runbook
    ],
)
def test_a_wrong_citation_fails(source: str):
    with pytest.raises(AssertionError):
        for citation in parse_source(source):
            check_citation(citation, runbook_file(citation.number).read_text(encoding="utf-8"))


def test_parse_source_splits_on_commas_outside_parentheses():
    assert parse_source("000 Emergency Procedures (High Load, scale out), 001 Resource Optimization") == [
        Citation("000", "Emergency Procedures", "High Load, scale out"),
        Citation("001", "Resource Optimization", None),
    ]
    with pytest.raises(ValueError):
        parse_source("Critical Thresholds")


def test_index_links_every_runbook_file():
    index = INDEX.read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([^)#\s]+)\)", index))
    files = {p.name for p in RUNBOOKS.iterdir() if p.is_file() and p != INDEX}
    assert files, "docs/runbooks/ holds no runbook"
    assert not files - linked, f"docs/runbooks/README.md does not link {sorted(files - linked)}"
    broken = [target for target in linked if not (RUNBOOKS / target).exists()]
    assert not broken, f"docs/runbooks/README.md links missing files: {broken}"


def test_there_are_five_numbered_runbooks():
    assert sorted(p.name[:3] for p in RUNBOOKS.glob("[0-9][0-9][0-9]-*.txt")) == ["000", "001", "002", "003", "004"]
