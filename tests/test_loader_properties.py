"""Property-based tests: malformed lines anywhere in a trace file never cost a valid sample.

Hypothesis inserts generated garbage lines (digits, commas, quotes, letters, minus signs) at
generated positions of a page's trace files; the loader must not raise, must report every
inserted line as a problem at its exact line number, and must still attribute every valid
sample of the page.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedgaze.data.ifllm import load_ifllm
from ifllm_builders import Page, build, edit_lines, n_attributed, page_dir, page_queries

# Lines that can never be a valid row of the file they land in: too few fields, or a
# non-numeric field where a number must be. Letters guarantee at least one bad field.
GARBAGE = st.text(alphabet='ab,-.0123456789 "', min_size=1, max_size=40).filter(
    lambda s: any(c in s for c in "ab") and s.strip() == s and s
)
INSERTS = st.lists(st.tuples(st.integers(0, 200), GARBAGE), min_size=1, max_size=6)
STEMS = st.sampled_from(
    ["abs_gaze", "abs_mouse", "rel_gaze_one", "rel_gaze_two", "rel_mouse_left", "rel_mouse_right"]
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stem=STEMS, inserts=INSERTS)
def test_garbage_lines_are_reported_and_valid_samples_kept(
    stem: str, inserts: list[tuple[int, str]]
) -> None:
    page = Page()
    with tempfile.TemporaryDirectory() as tmp:
        root = build(Path(tmp), [page])
        path = page_dir(root, page) / f"{stem}.csv"
        inserted_at: list[int] = []

        def insert(lines: list[str]) -> list[str]:
            out = list(lines)
            for pos, text in sorted(inserts, key=lambda x: x[0], reverse=True):
                out.insert(min(pos, len(out)), text)
            # 1-based line numbers of the garbage in the final file
            inserted_at.extend(i + 1 for i, line in enumerate(out) if line not in set(lines))
            return out

        edit_lines(path, insert)
        ds = load_ifllm(root)
        reported = {p.line for p in ds.problems if p.file.endswith(f"{stem}.csv")}
        assert set(inserted_at) <= reported, (inserted_at, sorted(reported))
        queries = page_queries(ds, page)
        assert sum(len(q.gaze) for q in queries) == n_attributed(page)
        assert sum(len(q.mouse) for q in queries) == n_attributed(page)
