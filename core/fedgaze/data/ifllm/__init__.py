"""Loader for the public IFLLM data set (gaze and mouse traces of people reading LLM answers).

``load_ifllm(root)`` turns the raw tables and trace folders into the project schema: one
:class:`~fedgaze.data.schema.Device` per Mechanical Turk worker, each query carrying the gaze and
mouse :class:`~fedgaze.data.schema.Samples` recorded while its answers were on screen.  Nothing
malformed is fatal: every row or file that cannot be used becomes a
:class:`~fedgaze.data.schema.Problem` (file relative to ``root``, 1-based physical line, 0 for a
whole file, and a reason of the form ``"category: detail"``) and everything valid is kept.

Layout: ``query_logs_table.csv[.gz]``, ``task_table.csv[.gz]`` and
``user_behavior/<worker>/<task_id>/*.csv[.gz]``; ``X.csv`` is preferred over ``X.csv.gz``.

Quirks handled (see ``shared/datasets/ifllm/README.md``)
-------------------------------------------------------
* ``rel_*`` rows: ``x,y,snippet,char_index,page_timer_ms[,validate],epoch_ms``.  The snippet is
  neither reliably quoted nor CSV-escaped (this copy has unquoted snippets such as ``019, 2023)``,
  doubled quotes, stray ``",`` and a stray ``"`` after ``epoch_ms``), so rows are split on commas
  and the fixed numeric fields are taken from both ends; the snippet is the text in between, minus
  one pair of enclosing quotes.  A snippet containing newlines spreads one record over several
  physical lines: a line that does not parse on its own, starts like a record (``x,y,"``) and
  does not end like one (``,epoch_ms``) is joined with the following lines that do not parse on
  their own either until the result parses (see ``repair``).  Problems point at the line where
  the bad record starts.
* 6-column ``rel_*`` files (September 2025) have no ``validate``: the layout is chosen per file
  from the rows that parse; ``validate`` is then -1.
* Pairwise ``abs_gaze`` has every batch written twice: exact duplicate rows are dropped from
  ``abs_*`` files (after that every folder of this copy matches ``abs_mouse`` 1:1).
* Files of a folder are aligned on ``page_timer_ms`` plus its occurrence number (the page timer can
  freeze for a few rows and restarts when the page is reloaded; ``epoch_ms`` can step backwards):
  rows present in only one file are dropped and reported, per file, as one summary Problem.
  ``t_ms`` is the ``abs_*`` ``epoch_ms``.
* ``-1,-1`` sentinels: ``abs_mouse`` before the first move becomes NaN x, y; a ``rel_*`` row at
  ``-1,-1`` is off that panel.  ``side`` is LEFT when the left (``_one``/``_left``, or the only
  pointwise) row is on its panel, else RIGHT when the right row is, else NONE; ``char_index`` and
  the snippet come from that row (-1 / empty when none).
* Pairwise vs pointwise is taken from the files present in the folder (two task ids break the
  odd/even rule), falling back to ``llm_response_2`` being non-empty when there is no folder.
* ``preference``/``likert_*`` are float strings (``"2.0"``); ``query_timestamp``
  ``0000-00-00 00:00:00`` or unparsable gives ``shown_at_ms=None`` and a Problem; "AI Error"
  responses are kept verbatim.  The schema has no field for ``llm_name_*`` (one carries a stray
  ``\\r\\n``), so names are not loaded.
* Calibration precision is ``task_table.accuracy`` per (worker, task) -> ``Device.calibration``.

Speed and memory
----------------
Devices are built one at a time (``iter_devices``; ``load_ifllm`` collects them), so memory is
bounded by the largest device.  All trace files of a device are read, parsed and aligned
together: ``read_csv`` reads the stored bytes of many files at once (gzip members concatenated,
a marker line between files), the ``abs_*`` files as 4 text fields typed like the per-line
parse, the ``rel_*`` files as lines that one vectorized parse splits; alignment and attribution
are numpy over the whole device, and snippets are searched for in two device-wide rounds.  A
batch ``read_csv`` rejects (damage, invalid UTF-8, a missing final newline, a BOM, ...) is
read file by file, and a file it rejects the careful way (Python decompression, decoding and
line split), which reports the problems; every route gives the same rows.  Python loops run
over files, pages, queries and bad lines only.

Modules
-------
* ``load``: the public API re-exported here, and the loader that reads the tables once and
  builds the chosen workers' devices on demand.
* ``devices``: one worker's device; ``pages``: which trace files a page has.
* ``files``: finding, reading, decompressing and decoding files; ``tables``: the query and
  task tables.
* ``batches`` (batched and careful reading), ``layouts`` (the vectorized parse), ``traces``
  (parsing a device's files, layout choice) and ``repair`` (records split by newlines):
  the trace files.
* ``folders`` (pairwise and pointwise folders) and ``align`` (abs and rel rows aligned, sides).
* ``timestamps``: the 4-hour offset, and why ``query_timestamp`` is the side that is wrong.
* ``evidence`` and ``attribution``: which query each sample belongs to, the method in detail.
* ``context``: the constants, the problem sink and the load context the modules share.
"""

from fedgaze.data.ifllm.context import BEHAVIOR_DIR, QUERY_TABLE, TASK_TABLE
from fedgaze.data.ifllm.files import table_path
from fedgaze.data.ifllm.load import (
    DeviceStream,
    IfllmDataset,
    iter_devices,
    labelled_comparison_counts,
    list_workers,
    load_ifllm,
    query_counts,
)

__all__ = [
    "BEHAVIOR_DIR",
    "QUERY_TABLE",
    "TASK_TABLE",
    "DeviceStream",
    "IfllmDataset",
    "iter_devices",
    "labelled_comparison_counts",
    "list_workers",
    "load_ifllm",
    "query_counts",
    "table_path",
]
