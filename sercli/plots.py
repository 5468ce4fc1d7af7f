"""Pictures of a results table: a timeline per recording and one chart of the batch (matplotlib, ``[plot]`` extra).

Each label has one colour in every picture (:func:`label_colours`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from sercli.writers import atomic_output, per_file_summary, table_labels

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


def recording_timeline(rows: pd.DataFrame, title: str = ""):
    """A figure of one recording's rows: segments coloured by label, bar height its confidence (top),
    and the label probabilities of each segment as stacked areas (bottom).

    Parameters
    ----------
    rows : pandas.DataFrame
        One recording's rows of a results table (seconds in ``start_s``/``end_s``).
    """
    import matplotlib.pyplot as plt

    labels = table_labels(rows)
    colours = label_colours(labels)
    speech = rows[rows["label"].notna()].sort_values("start_s").to_dict("records")
    end_s = float(rows["end_s"].max()) if len(rows) else 1.0
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
    figure, axis = plt.subplots(figsize=(10, 0.35 * len(names) + 1.5))
    left = np.zeros(len(names))
    for label, colour in colours.items():
        share = summary[f"share_{label}"].fillna(0.0).to_numpy()
        axis.barh(names, share, left=left, color=colour, label=label)
        left += share
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of speech time")
    axis.set_title(f"{len(names)} recordings, {summary['speech_s'].sum() / 60:.1f} min of speech", fontsize=9)
    _legend(figure, colours)
    figure.tight_layout(rect=(0, 0, 0.86, 1))
    return figure


def write_plots(frame: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Write ``batch.png`` and one ``<recording>.png`` timeline per recording into ``folder``.

    Returns
    -------
    list of Path
        The files written, the batch chart first.
    """
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    figures = [("batch", batch_chart(frame))]
    for number, (path, rows) in enumerate(frame.groupby("path", sort=True), start=1):
        figures.append((f"{number:04d}-{Path(path).stem}", recording_timeline(rows, path)))
    for name, figure in figures:
        target = folder / f"{name}.png"
        with atomic_output(target) as partial, open(partial, "wb") as handle:
            figure.savefig(handle, format="png", dpi=110)
        plt.close(figure)
        written.append(target)
    return written


def _legend(figure, colours: dict[str, str]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=colour, label=label) for label, colour in colours.items()]
    figure.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
