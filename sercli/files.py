"""Finding recordings: recursive, symlink-loop safe, filtered by suffix and globs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path

AUDIO_SUFFIXES = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".w64",
        ".rf64",
    }
)
"""File suffixes (lower case) treated as audio when walking folders."""


_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(32), 127]}


def path_text(path: str | Path) -> str:
    """How a path is written in every output (rows, errors, messages): valid UTF-8 on one line.

    Bytes of the name that are not UTF-8 become ``\\xHH`` (as Python's
    ``backslashreplace`` writes them), and so do control characters (``\\r``,
    ``\\n``, tab: ``\\x0d``, ``\\x0a``, ``\\x09``), which would break a CSV row
    or a message line. Every other name is written as it is.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace").translate(_CONTROL_ESCAPES)


def recording_key(path: str | Path) -> str:
    """How recordings are matched between runs and inputs: the absolute path with its folders'
    symbolic links resolved, as :func:`path_text` writes it (so a table's escaped path matches its file).

    The file name itself is kept, not followed: a link beside its target is a recording of its own
    (with rows of its own), and a link that loops still has a key.
    """
    path = Path(path)
    return path_text(Path(os.path.realpath(path.parent)) / path.name)


def find_audio_files(
    inputs: Iterable[str | Path],
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    suffixes: frozenset[str] = AUDIO_SUFFIXES,
) -> list[Path]:
    """Files to annotate under the given folders, plus the given files.

    Folders are walked recursively, following symbolic links but never entering
    the same folder twice, so link loops end. A file named directly is always
    kept; a file found in a folder is kept when its suffix is in ``suffixes``,
    it matches one of ``include`` (if any) and none of ``exclude``. Globs are
    matched against the path relative to the folder given and against the bare
    file name (``*`` also crosses ``/``).

    Returns
    -------
    list of Path
        Sorted, without duplicates (a file named twice, e.g. by a relative and an absolute path,
        counts once: :func:`recording_key`). Broken links, and folders that cannot be listed
        (unless excluded), are kept so that they are reported.

    Raises
    ------
    FileNotFoundError
        If an input does not exist.
    """
    include, exclude = list(include), list(exclude)
    found: set[Path] = set()
    visited: set[tuple[int, int]] = set()
    for item in map(Path, inputs):
        if not item.exists() and not item.is_symlink():
            raise FileNotFoundError(f"{item} does not exist")
        if not item.is_dir():
            found.add(item)
            continue

        def unlisted(error: OSError, item: Path = item) -> None:
            folder = Path(error.filename)
            if not any(fnmatch(folder.relative_to(item).as_posix(), g) or fnmatch(folder.name, g) for g in exclude):
                found.add(folder)

        for folder, subfolders, names in os.walk(item, onerror=unlisted, followlinks=True):
            status = os.stat(folder)
            if (status.st_dev, status.st_ino) in visited:
                subfolders.clear()
                continue
            visited.add((status.st_dev, status.st_ino))
            subfolders.sort()
            for name in names:
                path = Path(folder, name)
                relative = path.relative_to(item).as_posix()
                if path.suffix.lower() not in suffixes:
                    continue
                if include and not any(fnmatch(relative, g) or fnmatch(name, g) for g in include):
                    continue
                if any(fnmatch(relative, g) or fnmatch(name, g) for g in exclude):
                    continue
                found.add(path)
    unique = {recording_key(path): path for path in sorted(found, reverse=True)}
    return sorted(unique.values())
