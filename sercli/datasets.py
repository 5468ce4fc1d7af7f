"""Labelled recordings: the labels table, known corpus layouts and speaker-wise folds.

Training and evaluation read a list of :class:`LabelledClip`. It comes from a
**labels table** (CSV or Parquet) with the columns

``path`` (required)
    The recording, relative to the table's folder (or absolute).
``label`` (required)
    Any label name; a model's outputs are the labels its training table holds.
``speaker`` (optional)
    Who speaks: splits hold out whole speakers, and ``speaker`` normalisation
    standardises over each speaker's clips. Without it, each recording is its
    own speaker.
``start_s``, ``end_s`` (optional)
    The labelled part of the recording in seconds (both, or neither); empty means
    the whole recording.
``split`` (optional)
    ``train``, ``validation`` or ``test``, when the user fixes the split.

or from a folder in a **known corpus layout** (:data:`LAYOUTS`), whose file names
(or folder names) carry the labels; ``sercli dataset`` writes such a folder's
table so the user sees exactly what will be used. Corpus labels are mapped to
the RAVDESS names of :data:`sercli.EMOTIONS` where one fits (``ANG`` -> ``angry``),
so a fine-tuned bundled model keeps its output layer.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sercli import EMOTIONS
from sercli.files import find_audio_files

SPLITS = ("train", "validation", "test")
TABLE_COLUMNS = ("path", "label", "speaker", "start_s", "end_s", "split")
"""Columns a labels table may have; ``path`` and ``label`` are required."""


@dataclass(frozen=True)
class LabelledClip:
    """One labelled recording, or a labelled part of one.

    Attributes
    ----------
    path : Path
    label : str
    speaker : str or None
        ``None`` when unknown.
    start_s, end_s : float or None
        The labelled part of the recording in seconds; ``None`` for the whole recording.
    split : str or None
        One of :data:`SPLITS` when fixed by the user.
    corpus : str or None
        The corpus layout it was found in (:data:`LAYOUTS`), None for a labels table: training
        balances corpora and cross-validation tests every corpus in every fold.
    """

    path: Path
    label: str
    speaker: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    split: str | None = None
    corpus: str | None = None

    @property
    def group(self) -> str:
        """The speaker, or the recording when the speaker is unknown: what splits and normalisation group by."""
        return self.speaker if self.speaker is not None else f"recording:{self.path}"


class DatasetError(ValueError):
    """Labelled data that cannot be used; the message is one line naming the file and the cause."""


def label_order(labels: set[str] | list[str]) -> list[str]:
    """The output order of a model for these labels: RAVDESS emotions in :data:`sercli.EMOTIONS`
    order first, then any others alphabetically."""
    known = [e for e in EMOTIONS if e in labels]
    return known + sorted(set(labels) - set(EMOTIONS))


def natural_key(text: str) -> list:
    """Sort key comparing digit runs as numbers (``"2" < "10"``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class NameLayout:
    """A corpus whose file names carry the label and the speaker.

    Attributes
    ----------
    example : str
        A file name of the corpus, for messages.
    pattern : re.Pattern
        Matches a file's stem, with groups ``label`` (a code) and ``speaker``.
    labels : dict
        Label code (lower case) -> label name.
    """

    example: str
    pattern: re.Pattern
    labels: dict[str, str]

    def parse(self, path: Path) -> tuple[str, str]:
        """``(label, speaker)`` of a file.

        Raises
        ------
        ValueError
            If its name does not fit.
        """
        match = self.pattern.match(path.stem)
        if not match or match["label"].lower() not in self.labels:
            raise ValueError(f"{path.name} is not named like {self.example}")
        return self.labels[match["label"].lower()], match["speaker"].upper()


LAYOUTS: dict[str, NameLayout] = {
    # modality 03 (audio only), channel 01 (speech), emotion, intensity, statement, repetition, actor
    "ravdess": NameLayout(
        "03-01-05-01-02-01-12.wav",
        re.compile(r"^03-01-(?P<label>\d{2})-\d{2}-\d{2}-\d{2}-(?P<speaker>\d{2})$"),
        {f"{code:02d}": emotion for code, emotion in enumerate(EMOTIONS, start=1)},
    ),
    # actor, sentence, emotion, intensity
    "crema-d": NameLayout(
        "1001_DFA_ANG_XX.wav",
        re.compile(r"^(?P<speaker>\d{4})_[A-Z]{3}_(?P<label>[A-Z]{3})_[A-Z]{2}$"),
        {"ang": "angry", "dis": "disgust", "fea": "fearful", "hap": "happy", "neu": "neutral", "sad": "sad"},
    ),
    # older or younger actress, word, emotion (ps: pleasant surprise)
    "tess": NameLayout(
        "OAF_back_angry.wav",
        re.compile(r"^(?P<speaker>OAF|YAF)_[A-Za-z]+_(?P<label>[A-Za-z]+)$", re.IGNORECASE),
        {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy", "neutral": "neutral"}
        | {"ps": "surprised", "sad": "sad"},
    ),
    # speaker, emotion (sa sadness, su surprise), sentence
    "savee": NameLayout(
        "DC_a01.wav",
        re.compile(r"^(?P<speaker>DC|JE|JK|KL)_(?P<label>[a-z]{1,2})\d{2}$"),
        {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"},
    ),
    # speaker, text, emotion (German initials: Wut, Langeweile, Ekel, Angst, Freude, Trauer, neutral), version
    "emodb": NameLayout(
        "03a01Fa.wav",
        re.compile(r"^(?P<speaker>\d{2})[a-b]\d{2}(?P<label>[A-Z])[a-z]$"),
        {"w": "angry", "l": "bored", "e": "disgust", "a": "fearful", "f": "happy", "t": "sad", "n": "neutral"},
    ),
    # speaker, emotion, sentence
    "nemo": NameLayout(
        "EB0_anger_1.wav",
        re.compile(r"^(?P<speaker>[A-Z]{2}\d)_(?P<label>[a-z]+)_\d+$"),
        {"anger": "angry", "fear": "fearful", "happiness": "happy", "neutral": "neutral"}
        | {"sadness": "sad", "surprised": "surprised"},
    ),
}
"""Corpus layouts whose file names carry label and speaker, labels mapped to the RAVDESS names where
one fits. ``folders`` (one folder per label, no speaker) is the further layout :func:`find_clips` reads."""
LAYOUT_NAMES = (*LAYOUTS, "folders")


def find_clips(root: str | Path, layout: str | None = None) -> list[LabelledClip]:
    """The labelled recordings of a corpus folder, sorted by path.

    Parameters
    ----------
    root : str or Path
        Searched recursively for audio files.
    layout : str, optional
        One of :data:`LAYOUT_NAMES`. ``None``: the file-name layout that every
        audio file fits (files that fit none are skipped when one layout fits
        most of them). ``folders``: each file's label is the name of its folder.

    Raises
    ------
    DatasetError
        If the layout is unknown, cannot be told, or no file fits it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    paths = find_audio_files([root])
    return _layout_clips(root, paths, layout or detect_layout(root, paths))


def _layout_clips(root: Path, paths: list[Path], layout: str) -> list[LabelledClip]:
    """The clips among ``paths`` (audio files under ``root``) that ``layout`` names."""
    if layout == "folders":
        clips = [LabelledClip(p, p.parent.name, corpus=layout) for p in paths if p.parent != root]
    elif layout in LAYOUTS:
        clips = []
        for path in paths:
            try:
                label, speaker = LAYOUTS[layout].parse(path)
            except ValueError:
                continue
            clips.append(LabelledClip(path, label, speaker, corpus=layout))
    else:
        raise DatasetError(f"unknown layout '{layout}': use one of {', '.join(LAYOUT_NAMES)}")
    if not clips:
        raise DatasetError(f"no {layout} recordings under {root}")
    return clips


def detect_layout(root: Path, paths: list[Path]) -> str:
    """The file-name layout that most audio files under ``root`` fit (at least 90 % of them)."""
    counts = {name: sum(_fits(layout, p) for p in paths) for name, layout in LAYOUTS.items()}
    best = max(counts, key=counts.get)
    if not paths or counts[best] < 0.9 * len(paths):
        raise DatasetError(
            f"cannot tell the layout of {root} from its {len(paths)} audio file names: "
            f"pass --layout ({', '.join(LAYOUT_NAMES)}) or a labels table"
        )
    return best


def _fits(layout: NameLayout, path: Path) -> bool:
    try:
        layout.parse(path)
    except ValueError:
        return False
    return True


def read_labels_table(path: str | Path) -> list[LabelledClip]:
    """The clips of a labels table (CSV or Parquet; columns :data:`TABLE_COLUMNS`).

    Relative paths are taken from the table's folder. Empty ``speaker``,
    ``start_s``/``end_s`` or ``split`` cells mean unknown, whole recording and
    not fixed.

    Raises
    ------
    DatasetError
        One line naming the table (and the row, counted from 1 after the header)
        for an unreadable table, a missing or unknown column, an empty label, a
        missing recording, bad times, an unknown split, or a speaker in two splits.
    """
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DatasetError(f"labels table {path} not found") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read labels table {path}: {str(error).splitlines()[0]}") from None
    unknown = [c for c in frame.columns if c not in TABLE_COLUMNS]
    if unknown:
        raise DatasetError(f"{path}: unknown column '{unknown[0]}' (a labels table has {', '.join(TABLE_COLUMNS)})")
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing column '{missing[0]}'")
    if frame.empty:
        raise DatasetError(f"{path}: no rows")
    clips = [_table_row(path, i, row) for i, row in enumerate(frame.to_dict("records"), start=1)]
    _check_splits(path, clips)
    return clips


def _cell(row: dict, column: str, where: str) -> str | None:
    """A cell as stripped text, or ``None`` when absent or empty.

    Raises
    ------
    DatasetError
        If it holds something other than text or a number (a list, from Parquet).
    """
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not np.isscalar(value):
        raise DatasetError(f"{where}: {column} holds a {type(value).__name__}, not text")
    text = str(value).strip()
    return text or None


def _table_row(table: Path, number: int, row: dict) -> LabelledClip:
    where = f"{table} row {number}"
    recording, label = _cell(row, "path", where), _cell(row, "label", where)
    if recording is None or label is None:
        raise DatasetError(f"{where}: empty {'path' if recording is None else 'label'}")
    audio = Path(os.path.normpath(table.parent / recording))  # an absolute path stays as it is
    if not audio.is_file():
        raise DatasetError(f"{where}: recording {audio} not found")
    times = []
    for column in ("start_s", "end_s"):
        text = _cell(row, column, where)
        try:
            times.append(None if text is None else float(text))
        except ValueError:
            raise DatasetError(f"{where}: {column} '{text}' is not a number of seconds") from None
    start_s, end_s = times
    if (start_s is None) != (end_s is None):
        raise DatasetError(f"{where}: give both start_s and end_s, or neither")
    if start_s is not None and not 0 <= start_s < end_s:
        raise DatasetError(f"{where}: start_s {start_s} and end_s {end_s} do not make an interval")
    split = _cell(row, "split", where)
    if split is not None and split.lower() not in SPLITS:
        raise DatasetError(f"{where}: split '{split}' is not one of {', '.join(SPLITS)}")
    return LabelledClip(audio, label, _cell(row, "speaker", where), start_s, end_s, split and split.lower())


def _check_splits(table: Path, clips: list[LabelledClip]) -> None:
    """A speaker's clips must all be in one split (a fixed split is speaker-independent)."""
    seen: dict[str, str] = {}
    for clip in clips:
        if clip.speaker is None or clip.split is None:
            continue
        first = seen.setdefault(clip.speaker, clip.split)
        if first != clip.split:
            raise DatasetError(f"{table}: speaker '{clip.speaker}' is in both the {first} and the {clip.split} split")


CORPORA = {
    "ravdess": "RAVDESS speech (Livingstone & Russo 2018, CC BY-NC-SA 4.0)",
    "crema-d": "CREMA-D (Cao et al. 2014, ODbL)",
    "tess": "TESS (Dupuis & Pichora-Fuller 2010, CC BY-NC-ND 4.0)",
    "savee": "SAVEE (Haq & Jackson 2009)",
    "emodb": "Berlin EmoDB (Burkhardt et al. 2005)",
    "nemo": "nEMO (Christop 2024, CC BY-NC-SA 4.0)",
}
"""Each file-name layout's corpus, with its reference and licence, as model cards credit it."""


def load_clips(source: str | Path, layout: str | None = None) -> tuple[list[LabelledClip], str]:
    """Clips from a labels table (a ``.csv``/``.parquet`` file) or a corpus folder (:func:`find_clips`).

    Returns
    -------
    (list of LabelledClip, str)
        The clips, and what they are (the corpus and its credit, or the table's name) for a model card.
    """
    source = Path(source)
    if source.is_dir():
        paths = find_audio_files([source])  # walked once, for the layout and the clips
        layout = layout or detect_layout(source, paths)
        return _layout_clips(source, paths, layout), CORPORA.get(layout, f"one folder per label ({source.name})")
    if layout is not None:
        raise DatasetError(f"--layout is for corpus folders; {source} is a labels table")
    return read_labels_table(source), f"labels table {source.name}"


def write_labels_table(clips: list[LabelledClip], path: str | Path) -> None:
    """Write clips as a labels table (CSV or Parquet by suffix), atomically, paths relative to the
    table's folder as the user named them (symbolic links kept, not followed: reading the table
    joins them to its folder the same way)."""
    import pandas as pd

    from sercli.writers import atomic_output

    path = Path(path)
    folder = os.path.abspath(path.parent)
    frame = pd.DataFrame(
        {
            "path": [Path(os.path.relpath(os.path.abspath(c.path), folder)).as_posix() for c in clips],
            "label": [c.label for c in clips],
            "speaker": [c.speaker for c in clips],
            "start_s": [c.start_s for c in clips],
            "end_s": [c.end_s for c in clips],
            "split": [c.split for c in clips],
        }
    ).dropna(axis=1, how="all")
    with atomic_output(path) as partial:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(partial, index=False)
        else:
            frame.to_csv(partial, index=False, lineterminator="\n")


def check_known_labels(clips: list[LabelledClip], labels: list[str]) -> None:
    """Raise :class:`DatasetError` if a clip's label is not one of ``labels`` (a model's outputs)."""
    unknown = sorted({clip.label for clip in clips} - set(labels))
    if unknown:
        raise DatasetError(f"label '{unknown[0]}' is not one of the model's labels ({', '.join(labels)})")


def label_counts(clips: list[LabelledClip]) -> dict[str, int]:
    """Clips per label, in :func:`label_order`."""
    labels = [c.label for c in clips]
    return {label: labels.count(label) for label in label_order(set(labels))}


def speaker_folds(speakers: list[str], n_folds: int) -> list[list[str]]:
    """Split speakers into ``n_folds`` groups for leave-speakers-out cross-validation.

    Speakers are put in natural order (:func:`natural_key`), every other one
    first (positions 0, 2, 4, ..., then 1, 3, ...), and dealt round-robin. For a
    corpus numbering its speakers by alternating sex, as RAVDESS does (odd male,
    even female), each fold is balanced in sex: 20 actors in 2 folds give 5 men
    and 5 women each, and in 5 folds fold ``k`` holds actors ``2k+1, 2k+11, 2k+2, 2k+12``.
    """
    ordered = sorted(set(speakers), key=natural_key)
    if not 2 <= n_folds <= len(ordered):
        raise DatasetError(f"cannot make {n_folds} folds from {len(ordered)} speakers")
    interleaved = ordered[0::2] + ordered[1::2]
    return [sorted(interleaved[k::n_folds], key=natural_key) for k in range(n_folds)]


def corpus_speakers(clips: list[LabelledClip]) -> dict[str | None, list[str]]:
    """Each corpus's speakers (:attr:`LabelledClip.group`) in natural order, corpora in order of first clip."""
    found: dict[str | None, set[str]] = {}
    for clip in clips:
        found.setdefault(clip.corpus, set()).add(clip.group)
    return {corpus: sorted(speakers, key=natural_key) for corpus, speakers in found.items()}


def corpus_folds(clips: list[LabelledClip], n_folds: int) -> list[list[str]]:
    """Leave-speakers-out folds that test every corpus: fold ``k`` holds fold ``k`` of each corpus's
    :func:`speaker_folds` (for one corpus, exactly its folds)."""
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for speakers in corpus_speakers(clips).values():
        for k, fold in enumerate(speaker_folds(speakers, n_folds)):
            folds[k] += fold
    return [sorted(fold, key=natural_key) for fold in folds]


def validation_speakers(speakers: list[str]) -> list[str]:
    """Early-stopping speakers taken from training speakers: the last two in natural order (a man and
    a woman in RAVDESS), or only the last when that would leave fewer than two to train on."""
    ordered = sorted(set(speakers), key=natural_key)
    count = 2 if len(ordered) >= 4 else 1
    return ordered[-count:] if len(ordered) >= 2 else []


def fold_split(clips: list[LabelledClip], test_speakers: list[str]) -> tuple[list[str], list[str]]:
    """A cross-validation fold's training and early-stopping speakers: of the speakers not in
    ``test_speakers``, each corpus's :func:`validation_speakers` stop early and the rest are trained on.

    Returns
    -------
    train, validation : list of str
        Speakers (:attr:`LabelledClip.group`); ``train`` in natural order, ``validation`` corpus by corpus.
    """
    rest = sorted({clip.group for clip in clips} - set(test_speakers), key=natural_key)
    validation = [
        speaker
        for speakers in corpus_speakers(clips).values()
        for speaker in validation_speakers([s for s in speakers if s in rest])
    ]
    return [s for s in rest if s not in validation], validation


def balanced_weights(clips: list[LabelledClip]) -> np.ndarray:
    """Each clip's training weight, shape ``(n_clips,)``, mean 1: every corpus weighs the same in total, and
    within a corpus every label it has weighs the same (RAVDESS's neutral, with half the clips of the other
    emotions, counts twice per clip). The network's loss and the functional head are weighted by it."""
    labels = np.array([clip.label for clip in clips], dtype=object)
    corpora = np.array([clip.corpus or "" for clip in clips], dtype=object)
    weights = np.empty(len(clips))
    for corpus in np.unique(corpora):
        members = corpora == corpus
        names, index, counts = np.unique(labels[members], return_inverse=True, return_counts=True)
        weights[members] = 1.0 / (len(names) * counts[index])
    return weights * len(clips) / len(np.unique(corpora))


def clip_groups(clips: list[LabelledClip]) -> np.ndarray:
    """Each clip's :attr:`LabelledClip.group`, shape ``(n_clips,)``."""
    return np.array([clip.group for clip in clips], dtype=object)
