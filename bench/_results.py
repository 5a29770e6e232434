"""Writing a benchmark's section into a markdown results page, leaving the rest untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedgaze.atomic import write_bytes_atomic


def write_section(path: Path, marker: str, section: str, heading: str) -> None:
    """Replace the text between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` in
    ``path`` with ``section``; without the markers, append ``heading`` and the section."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{section.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n{block}\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def publish(
    section: str,
    result: dict[str, Any],
    *,
    markdown: Path | None,
    json_path: Path | None,
    marker: str,
    heading: str,
) -> None:
    """Write a benchmark's ``section`` into ``markdown`` (between its markers) and its
    ``result`` as JSON into ``json_path`` (each when given), then print the section."""
    if markdown is not None:
        write_section(markdown, marker, section, heading)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(section)


def command_line(script: str, quick: bool, seeds: int, default_seeds: int = 3) -> str:
    """The command that reproduces a benchmark run, as its section states it."""
    options = " --quick" if quick else (f" --seeds {seeds}" if seeds != default_seeds else "")
    return f"python {script}{options}"
