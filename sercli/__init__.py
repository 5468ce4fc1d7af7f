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

__all__ = ["EMOTIONS", "Annotator", "__version__", "annotate"]


def __getattr__(name: str):
    """``sercli.annotate`` and ``sercli.Annotator``, imported on first use (pandas and LiteRT stay out of
    ``sercli --help``)."""
    if name in ("Annotator", "annotate"):
        from sercli import annotator

        return getattr(annotator, name)
    raise AttributeError(f"module 'sercli' has no attribute {name!r}")
