"""sercli: batch speech-emotion annotation of folders of recordings."""

__version__ = "0.1.0"

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
"""The 8 RAVDESS emotions, in RAVDESS code order (code ``01`` is ``EMOTIONS[0]``)."""
