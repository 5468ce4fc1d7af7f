"""Pictures of a results table: a timeline per recording and one chart of the batch (matplotlib, ``[plot]`` extra).

Each label has one colour in every picture (:func:`label_colours`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from sercli.writers import atomic_output, per_file_summary, recording_length, table_labels

MIN_LABEL_WIDTH = 0.04
"""A segment is labelled in a timeline when it spans at least this share of the recording (narrower
ones would overlap); the colours and the legend say the rest."""

MAX_CHART_ROWS = 100
"""The batch chart names its recordings up to this many; beyond, the bars stay and the names go."""

EMOTION_COLOURS = {
    "neutral": "#9e9e9e",
    "calm": "#4db6ac",
    "happy": "#fdd835",
    "sad": "#1e88e5",
    "angry": "#e53935",
    "fearful": "#8e24aa",
    "disgust": "#6d8b22",
    "surprised": "#fb8c00",
}
"""The RAVDESS emotions' colours."""


def label_colours(labels: list[str]) -> dict[str, str]:
    """A colour per label: :data:`EMOTION_COLOURS` for the RAVDESS emotions, matplotlib's ``tab20``
    colours in turn for other labels."""
    import matplotlib.colors

    others = iter(matplotlib.colormaps["tab20"].colors)
    return {
        label: EMOTION_COLOURS.get(label) or matplotlib.colors.to_hex(next(others, (0.5, 0.5, 0.5))) for label in labels
    }


def check_plottable(frame: pd.DataFrame, name: str = "the table") -> None:
    """Refuse a table whose labels have no probability column.

    Raises
    ------
    ValueError
        One line naming the first such label and its row.
    """
    labels = set(table_labels(frame))
    unknown = frame["label"].notna() & ~frame["label"].isin(labels)
    if unknown.any():
        row = int(np.argmax(unknown.to_numpy()))
        raise ValueError(
            f"{name} row {row + 1}: label '{frame['label'].iloc[row]}' has no prob_{frame['label'].iloc[row]} column"
        )


def recording_timeline(rows: pd.DataFrame, title: str = "", length_s: float | None = None):
    """A figure of one recording's rows: segments coloured by label, bar height its confidence (top),
    and the label probabilities of each segment as stacked areas (bottom).

    Parameters
    ----------
    rows : pandas.DataFrame
        One recording's rows of a results table (seconds in ``start_s``/``end_s``).
    length_s : float, optional
        The recording's length in seconds, where the time axis ends (default: its last segment's end).
    """
    import matplotlib.pyplot as plt

    labels = table_labels(rows)
    colours = label_colours(labels)
    speech = rows[rows["label"].notna()].sort_values("start_s").to_dict("records")
    end_s = max(float(rows["end_s"].max()) if len(rows) else 1.0, length_s or 0.0)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4), sharex=True, height_ratios=[1, 2])
    for row in speech:
        top.bar(
            row["start_s"],
            row["confidence"],
            width=row["end_s"] - row["start_s"],
            align="edge",
            color=colours[row["label"]],
            edgecolor="black",
            linewidth=0.3,
        )
        if row["end_s"] - row["start_s"] >= MIN_LABEL_WIDTH * end_s:
            middle = (row["start_s"] + row["end_s"]) / 2
            top.text(middle, row["confidence"] + 0.03, row["label"], ha="center", fontsize=7)
    top.set_ylim(0, 1.2)
    top.set_ylabel("confidence")
    top.set_title(title, fontsize=9, loc="left")
    for row in speech:
        times = [row["start_s"], row["end_s"]]
        bottom_edge = 0.0
        for label in labels:
            p = row[f"prob_{label}"]
            bottom.fill_between(times, bottom_edge, bottom_edge + p, color=colours[label], linewidth=0)
            bottom_edge += p
    bottom.set_ylim(0, 1)
    bottom.set_xlim(0, end_s)
    bottom.set_ylabel("probability")
    bottom.set_xlabel("time (s)")
    _legend(figure, colours)
    figure.tight_layout(rect=(0, 0, 0.86, 1))
    return figure


def batch_chart(frame: pd.DataFrame):
    """A figure of the whole batch: each recording's share of speech time per label, one bar a recording."""
    import matplotlib.pyplot as plt

    colours = label_colours(table_labels(frame))
    summary = per_file_summary(frame)
    names = [Path(p).name for p in summary["path"]]
    rows = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(10, 0.35 * min(len(names), MAX_CHART_ROWS) + 1.5))
    left = np.zeros(len(names))
    for label, colour in colours.items():
        share = summary[f"share_{label}"].fillna(0.0).to_numpy()
        axis.barh(rows, share, left=left, height=0.8, color=colour, label=label)
        left += share
    if len(names) <= MAX_CHART_ROWS:
        axis.set_yticks(rows, names)
    else:
        axis.set_yticks([])
        axis.set_ylabel(f"{len(names)} recordings, in path order")
    axis.set_ylim(len(names) - 0.5, -0.5)
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of speech time")
    axis.set_title(f"{len(names)} recordings, {summary['speech_s'].sum() / 60:.1f} min of speech", fontsize=9)
    _legend(figure, colours)
    figure.tight_layout(rect=(0, 0, 0.86, 1))
    return figure


def write_plots(frame: pd.DataFrame, folder: str | Path, name: str = "the table") -> list[Path]:
    """Write ``batch.png`` and one ``<recording>.png`` timeline per recording into ``folder``.

    ``name`` is what :func:`check_plottable`'s error calls the table.

    Returns
    -------
    list of Path
        The files written, the batch chart first.
    """
    matplotlib.use("Agg")  # files only, no window

    check_plottable(frame, name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [_save(batch_chart(frame), folder / "batch.png")]
    for number, (path, rows) in enumerate(frame.groupby("path", sort=True), start=1):
        figure = recording_timeline(rows, path, recording_length(path, 0.0))
        written.append(_save(figure, folder / f"{number:04d}-{Path(path).stem}.png"))
    return written


def confusion_chart(confusion: list[list[int]], labels: list[str], title: str = ""):
    """A figure of a confusion matrix (rows true, columns predicted), each cell's count on it in a
    colour that reads on the cell, each row's recall beside it."""
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion)
    figure, axes = plt.subplots(figsize=(7.5, 6))
    image = axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    recall = counts.diagonal() / np.maximum(counts.sum(axis=1), 1)
    axes.set_yticks(range(len(labels)), [f"{label} ({r:.0%})" for label, r in zip(labels, recall)])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (recall)")
    axes.set_title(title, fontsize=9)
    dark = counts > counts.max() / 2
    for (i, j), count in np.ndenumerate(counts):
        axes.text(j, i, count, ha="center", va="center", fontsize=8, color="white" if dark[i, j] else "black")
    figure.colorbar(image)
    figure.tight_layout()
    return figure


def write_confusion(confusion: list[list[int]], labels: list[str], path: str | Path, title: str = "") -> Path:
    """Save :func:`confusion_chart` as a PNG at ``path``."""
    matplotlib.use("Agg")
    return _save(confusion_chart(confusion, labels, title), Path(path))


def _save(figure, target: Path) -> Path:
    """Write a figure as PNG atomically, then close it (a batch opens one at a time)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_output(target) as partial, open(partial, "wb") as handle:
            figure.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(figure)
    return target


def _legend(figure, colours: dict[str, str]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=colour, label=label) for label, colour in colours.items()]
    figure.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
