"""Writing a benchmark's section into a markdown results page, leaving the rest untouched."""

from __future__ import annotations

from pathlib import Path

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
