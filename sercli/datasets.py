"""The RAVDESS speech corpus: file-name labels and actor-wise splits.

RAVDESS (Livingstone & Russo, 2018; CC BY-NC-SA 4.0) names every clip
``MM-VV-EE-II-SS-RR-AA.ext``: modality (03 audio-only), vocal channel (01
speech), emotion 01..08 in :data:`sercli.EMOTIONS` order, intensity, statement,
repetition and actor 01..24 (odd male, even female). The corpus is distributed
as 48 kHz WAV; any format :mod:`sercli.audio` reads is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sercli import EMOTIONS
from sercli.files import find_audio_files

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
AUDIO_SUFFIXES = frozenset({".wav", ".flac"})


@dataclass(frozen=True)
class RavdessClip:
    """One labelled RAVDESS recording."""

    path: Path
    emotion: int
    """Index into :data:`sercli.EMOTIONS` (file code minus one)."""
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def label(self) -> str:
        """The emotion's name."""
        return EMOTIONS[self.emotion]


def parse_ravdess_name(path: str | Path) -> RavdessClip:
    """Read the labels out of a RAVDESS file name.

    Raises
    ------
    ValueError
        If the name does not follow the RAVDESS scheme or is not audio-only speech.
    """
    path = Path(path)
    match = _NAME.match(path.stem)
    if not match:
        raise ValueError(f"{path.name} is not a RAVDESS name (MM-VV-EE-II-SS-RR-AA)")
    modality, channel, emotion, intensity, statement, repetition, actor = map(int, match.groups())
    if (modality, channel) != (3, 1):
        raise ValueError(f"{path.name} is not an audio-only speech clip (03-01-...)")
    if not 1 <= emotion <= len(EMOTIONS):
        raise ValueError(f"{path.name} has emotion code {emotion:02d}, outside 01..08")
    return RavdessClip(path, emotion - 1, intensity, statement, repetition, actor)


def find_ravdess_clips(root: str | Path) -> list[RavdessClip]:
    """All audio-only speech clips under ``root``, sorted by path.

    Raises
    ------
    ValueError
        If ``root`` holds no RAVDESS clip.
    """
    clips = []
    for path in find_audio_files([root], suffixes=AUDIO_SUFFIXES):
        try:
            clips.append(parse_ravdess_name(path))
        except ValueError:
            continue
    if not clips:
        raise ValueError(f"no RAVDESS speech clips (03-01-EE-II-SS-RR-AA.wav/.flac) under {root}")
    return clips


def actor_folds(actors: list[int], n_folds: int) -> list[list[int]]:
    """Split actors into ``n_folds`` groups, each as balanced in sex as the numbers allow.

    Male (odd) actors, then female (even) ones, are dealt round-robin, so with 20
    actors and 2 folds each fold holds 5 men and 5 women, and with 5 folds fold
    ``k`` holds actors ``2k+1, 2k+11, 2k+2, 2k+12``.
    """
    ordered = sorted(set(actors))
    if not 2 <= n_folds <= len(ordered):
        raise ValueError(f"cannot make {n_folds} folds from {len(ordered)} actors")
    men_then_women = [a for a in ordered if a % 2] + [a for a in ordered if a % 2 == 0]
    return [sorted(men_then_women[k::n_folds]) for k in range(n_folds)]
