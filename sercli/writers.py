"""Writing results: atomic file replacement, CSV and Parquet tables.

pandas and pyarrow are imported by the functions that need them. Writing rows needs no
pandas: CSV (:func:`write_csv` of :func:`segment_columns`, on a stream or as a results
file) needs neither, Parquet only pyarrow, so ``sercli annotate FILE -o -``, ``-o
results.csv`` and ``-o results.parquet`` start without pandas' half a second of imports;
reading a table (``--resume``, ``export``) needs pandas.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from sercli import EMOTIONS
from sercli.pipeline import SegmentEmotion

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces ``path`` when the block succeeds.

    Readers see either the old file or the complete new one, never a partial
    write; on an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


SEGMENT_COLUMNS: tuple[str, ...] = ("path", "segment", "start_s", "end_s", "label", "confidence")
"""The first columns of every results table; one ``prob_<label>`` column per model label follows."""


def result_columns(labels: Sequence[str] = EMOTIONS) -> tuple[str, ...]:
    """Columns of the results table of a model with these labels, in order."""
    return (*SEGMENT_COLUMNS, *(f"prob_{label}" for label in labels))


RESULT_COLUMNS = result_columns(EMOTIONS)
"""Columns of the bundled model's results table."""


def table_labels(frame: pd.DataFrame) -> list[str]:
    """The model labels of a results table, from its ``prob_<label>`` columns in order."""
    return [column.removeprefix("prob_") for column in frame.columns if column.startswith("prob_")]


TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def table_format(path: str | Path) -> str:
    """``"csv"`` or ``"parquet"`` from a file name (``-`` is CSV on stdout).

    Raises
    ------
    ValueError
        For any other suffix.
    """
    if str(path) == "-":
        return "csv"
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"unknown output format '{suffix or path}': use .csv, .parquet or - (CSV on stdout)")
    return TABLE_SUFFIXES[suffix]


def results_frame(rows: Iterable[SegmentEmotion], labels: Sequence[str] = EMOTIONS) -> pd.DataFrame:
    """The results table of some rows of a model with these labels, with :func:`result_columns` and their dtypes."""
    import pandas as pd

    return conform(pd.DataFrame(segment_columns(list(rows), labels)))


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """A results table read from anywhere, checked and given the canonical dtypes.

    The model's labels are read from the ``prob_<label>`` columns (:func:`table_labels`).

    Raises
    ------
    ValueError
        If columns are missing.
    """
    missing = [column for column in SEGMENT_COLUMNS if column not in frame.columns]
    if len(table_labels(frame)) < 2:
        missing.append("prob_<label> (two or more)")
    if missing:
        raise ValueError(f"not a sercli results table: missing columns {', '.join(missing)}")
    frame = frame.loc[:, list(result_columns(table_labels(frame)))].copy()
    frame["path"] = frame["path"].astype("string")
    frame["label"] = frame["label"].astype("string")
    frame["segment"] = frame["segment"].astype(np.int32)
    frame[["start_s", "end_s"]] = frame[["start_s", "end_s"]].astype(np.float64)
    for column in _score_columns(frame):
        frame[column] = frame[column].astype(np.float32)
    return frame


def _score_columns(frame: pd.DataFrame) -> list[str]:
    """``confidence`` and the probability columns."""
    return ["confidence", *(f"prob_{label}" for label in table_labels(frame))]


def sort_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by path, then start time."""
    return frame.sort_values(["path", "start_s", "segment"], kind="stable", ignore_index=True)


def read_results(path: str | Path, cut_off: str = "refuse") -> pd.DataFrame:
    """Read a results table written by :func:`write_results` (CSV or Parquet).

    Parameters
    ----------
    cut_off : str
        What to do with a CSV that does not end with a line break, i.e. was cut off in
        the middle of a row: ``refuse`` (raise) or ``drop`` that row and every row of the
        last complete row's recording (they may go on past the cut), to annotate again.

    Raises
    ------
    ValueError
        If the file is not a results table, or is cut off and ``cut_off`` is ``refuse``.
    """
    import pandas as pd
    import pyarrow as pa

    cut = table_format(path) == "csv" and _ends_mid_line(path)
    if cut and cut_off == "refuse":
        raise ValueError(f"{path} ends in the middle of a row (cut off?): resume the run that wrote it to repair it")
    try:
        if table_format(path) == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(
                path, dtype={"path": "string", "label": "string"}, keep_default_na=False, na_values=[""]
            )
    except (OSError, pd.errors.ParserError, pa.ArrowInvalid) as error:
        raise ValueError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if cut and len(frame):
        frame = frame.iloc[:-1]
        frame = frame[frame["path"] != frame["path"].iloc[-1]] if len(frame) else frame
    return conform(frame)


def _ends_mid_line(path: str | Path) -> bool:
    """Whether a non-empty file's last byte is not a line break."""
    try:
        with open(path, "rb") as handle:
            if handle.seek(0, os.SEEK_END) == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:
        return False  # reading the table will say why


def segment_columns(rows: Sequence[SegmentEmotion], labels: Sequence[str] = EMOTIONS) -> dict[str, Sequence]:
    """Rows as the columns of a results table (:func:`result_columns`) without pandas: paths and labels
    as lists, the others as numpy arrays of the table's dtypes (segment int32, seconds float64, scores
    float32)."""
    probabilities = np.array([row.probabilities for row in rows], dtype=np.float32).reshape(len(rows), len(labels))
    return {
        "path": [row.path for row in rows],
        "segment": np.array([row.segment for row in rows], dtype=np.int32),
        "start_s": np.array([row.start_s for row in rows], dtype=np.float64),
        "end_s": np.array([row.end_s for row in rows], dtype=np.float64),
        "label": [row.label for row in rows],
        "confidence": np.array([row.confidence for row in rows], dtype=np.float32),
        **{f"prob_{label}": probabilities[:, i].copy() for i, label in enumerate(labels)},
    }


def frame_columns(frame: pd.DataFrame) -> dict[str, Sequence]:
    """A results table's columns as :func:`segment_columns` gives them (text as lists, numbers as arrays)."""
    return {
        name: column.to_numpy() if column.dtype.kind in "fiu" else column.tolist() for name, column in frame.items()
    }


def concat_columns(first: Mapping[str, Sequence], second: Mapping[str, Sequence]) -> dict[str, Sequence]:
    """Two tables of the same columns (:func:`segment_columns`) as one, sorted as :func:`sort_results`
    sorts: by path, then start time, then segment."""
    paths = np.array([*first["path"], *second["path"]], dtype=object)
    by_time = np.lexsort([np.concatenate([first[name], second[name]]) for name in ("segment", "start_s")])
    order = by_time[np.argsort(paths[by_time], kind="stable")]  # lexsort takes no strings: paths last, stably
    joined = {}
    for name, column in first.items():
        if isinstance(column, np.ndarray):
            joined[name] = np.concatenate([column, second[name]])[order]
        else:
            values = [*column, *second[name]]
            joined[name] = [values[i] for i in order]
    return joined


def write_csv(columns: Mapping[str, Sequence], handle: TextIO, header: bool = True) -> None:
    """CSV text of a table given as its columns (:func:`segment_columns`, or a DataFrame's columns):
    seconds (``*_s`` columns) to the millisecond, other floats (scores, shares) to 5 significant digits
    of their value rounded to 1e-5, missing values (None, NaN, pandas' NA) empty; with ``header``, the
    column names first."""
    writer = csv.writer(handle, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows(zip(*(_fields(name, column) for name, column in columns.items())))


def _fields(name: str, column: Sequence) -> list:
    """A column's CSV fields (see :func:`write_csv`), formatted by its first value's type."""
    values = column.tolist() if hasattr(column, "tolist") else list(column)  # numpy's, pandas' scalars -> Python's
    first = next((v for v in values if isinstance(v, (str, int, float))), None)
    if not isinstance(first, float):
        return [v if isinstance(v, (str, int)) else "" for v in values]
    present = [isinstance(v, float) and not math.isnan(v) for v in values]
    if name.endswith("_s"):
        return [f"{v:.3f}".rstrip("0").rstrip(".") if ok else "" for v, ok in zip(values, present)]
    return [f"{round(v, 5):.5g}" if ok else "" for v, ok in zip(values, present)]


def metadata_path(path: str | Path) -> Path:
    """Where a CSV results file's metadata lives: ``<path>.meta.json`` (Parquet keeps it inside)."""
    return Path(path).with_name(Path(path).name + ".meta.json")


def write_results(table: Mapping[str, Sequence], path: str | Path, metadata: dict | None = None) -> None:
    """Atomically write a results table (:func:`segment_columns`, or a DataFrame with the results
    table's dtypes) as CSV or Parquet (by suffix), with its metadata; neither needs pandas.

    ``metadata`` (model identity, run options) goes as JSON under the Parquet
    schema metadata key ``sercli``, or for CSV into :func:`metadata_path`, written
    first, so a CSV on disk never lacks the record of how it was made.
    """
    text = json.dumps(metadata or {})
    if table_format(path) == "parquet":
        import pyarrow.parquet as pq

        arrow = _arrow_table(table).replace_schema_metadata({b"sercli": text.encode()})
        with atomic_output(path) as partial:
            pq.write_table(arrow, partial)
        return
    with atomic_output(metadata_path(path)) as partial:
        partial.write_text(text + "\n")
    write_csv_file(table, path)


def write_csv_file(columns: Mapping[str, Sequence], path: str | Path) -> None:
    """Atomically write a table given as its columns as a UTF-8 CSV file (:func:`write_csv`)."""
    with atomic_output(path) as partial, open(partial, "w", newline="", encoding="utf-8") as handle:
        write_csv(columns, handle)


def _arrow_table(table: Mapping[str, Sequence]):
    """A results table (:func:`segment_columns`, or a DataFrame) as a pyarrow Table: ``path`` and
    ``label`` as large strings, the other columns of their own dtypes (segment int32, seconds float64,
    scores float32); a missing label or a NaN is null.

    The columns are handed to Arrow as buffers (``pa.Array.from_buffers``): ``pa.array``
    imports pandas for its type checks, which is most of the start-up of a short run.
    """
    import pyarrow as pa

    def validity(present: np.ndarray):
        return None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))

    arrays = {}
    for name, column in table.items():
        if name in _TEXT_COLUMNS:
            present = np.array([isinstance(value, str) for value in column], dtype=bool)
            encoded = [value.encode() if ok else b"" for value, ok in zip(column, present)]
            offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
            np.cumsum([len(value) for value in encoded], out=offsets[1:])
            buffers = [validity(present), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
            arrays[name] = pa.Array.from_buffers(pa.large_string(), len(encoded), buffers)
        else:
            values = np.ascontiguousarray(column)
            present = ~np.isnan(values) if values.dtype.kind == "f" else np.ones(len(values), dtype=bool)
            buffers = [validity(present), pa.py_buffer(values)]
            arrays[name] = pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), buffers)
    return pa.table(arrays)


_TEXT_COLUMNS = ("path", "label")


def read_metadata(path: str | Path) -> dict:
    """The ``sercli`` metadata of a results file (empty when it has none)."""
    if table_format(path) != "parquet":
        sidecar = metadata_path(path)
        return json.loads(sidecar.read_text()) if sidecar.exists() else {}
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(b"sercli", b"{}")
    return json.loads(raw)


def per_file_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per recording: speech time, segment count, dominant label and each label's share.

    Shares (``share_<label>``, one per model label) are fractions of the recording's
    speech time whose segments carry each label; the dominant label has the
    largest share (empty when no speech was found).
    """
    import pandas as pd

    labels = table_labels(frame)
    speech = frame[frame["label"].notna()].assign(duration_s=lambda f: f["end_s"] - f["start_s"])
    shares = speech.pivot_table(index="path", columns="label", values="duration_s", aggfunc="sum", fill_value=0.0)
    shares = shares.reindex(columns=labels, fill_value=0.0)
    totals = shares.sum(axis=1)
    summary = pd.DataFrame(index=pd.Index(frame["path"].unique(), name="path"))
    summary["segments"] = speech.groupby("path").size().reindex(summary.index, fill_value=0).astype(np.int32)
    summary["speech_s"] = totals.reindex(summary.index, fill_value=0.0)
    summary["dominant"] = pd.array(shares.idxmax(axis=1).reindex(summary.index), dtype="string")
    fractions = shares.div(totals, axis=0).reindex(summary.index)
    summary["dominant_share"] = fractions.max(axis=1)
    for label in labels:
        summary[f"share_{label}"] = fractions[label]
    return summary.reset_index()


LABEL_FORMATS = {"audacity": ".txt", "textgrid": ".TextGrid"}


def write_labels(frame: pd.DataFrame, folder: str | Path, label_format: str, overwrite: bool = False) -> list[Path]:
    """Write one label file per recording into ``folder``, mirroring the recordings' folders.

    ``audacity``: tab-separated ``start end label`` lines (Audacity label track).
    ``textgrid``: a Praat TextGrid with one interval tier ``emotion`` spanning the
    whole recording (its length read from the file when it is still there, else
    the end of its last segment); gaps between segments are empty intervals.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ValueError
        If ``folder`` names a results table, or a label file exists and ``overwrite`` is false
        (then nothing is written).
    """
    folder = Path(folder)
    if folder.suffix.lower() in TABLE_SUFFIXES:
        raise ValueError(f"{folder} looks like a table: --labels writes label files into a folder")
    # absolute paths, so that rows like ../../x.wav still land inside the folder
    paths = [os.path.abspath(p) for p in frame["path"].unique()]
    root = Path(os.path.commonpath([os.path.dirname(p) for p in paths])) if paths else Path()
    labelled = list(frame[frame["label"].notna()].groupby("path", sort=True))
    targets = [
        folder / Path(os.path.abspath(path)).relative_to(root).with_suffix(LABEL_FORMATS[label_format])
        for path, _ in labelled
    ]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} exists ({len(existing)} label files would be replaced): pass --overwrite")
    for (path, rows), target in zip(labelled, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        intervals = list(zip(rows["start_s"], rows["end_s"], rows["label"]))
        if label_format == "audacity":
            text = _audacity(intervals)
        else:
            text = _textgrid(intervals, recording_length(path, float(rows["end_s"].max())))
        with atomic_output(target) as partial:
            partial.write_text(text, encoding="utf-8")
    return targets


def recording_length(path: str, fallback_s: float) -> float:
    """The recording's length in seconds from its header, or ``fallback_s`` when it cannot be read."""
    from sercli.audio import AudioError, audio_info

    try:
        return max(audio_info(path).duration_s, fallback_s)
    except AudioError:
        return fallback_s


def _audacity(intervals: list[tuple[float, float, str]]) -> str:
    return "".join(f"{start:.3f}\t{end:.3f}\t{label}\n" for start, end, label in intervals)


def _textgrid(intervals: list[tuple[float, float, str]], length_s: float) -> str:
    filled, cursor = [], 0.0
    for start, end, label in intervals:
        if start > cursor:
            filled.append((cursor, start, ""))
        filled.append((start, end, label))
        cursor = end
    if length_s > cursor + 5e-4:
        filled.append((cursor, length_s, ""))
    cursor = length_s
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0",
        f"xmax = {cursor:.3f}",
        "tiers? <exists>",
        "size = 1",
        "item []:",
        "    item [1]:",
        '        class = "IntervalTier"',
        '        name = "emotion"',
        "        xmin = 0",
        f"        xmax = {cursor:.3f}",
        f"        intervals: size = {len(filled)}",
    ]
    for i, (start, end, label) in enumerate(filled, 1):
        lines += [
            f"        intervals [{i}]:",
            f"            xmin = {start:.3f}",
            f"            xmax = {end:.3f}",
            f'            text = "{label}"',
        ]
    return "\n".join(lines) + "\n"
