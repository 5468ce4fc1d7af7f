"""Annotation on a Dask cluster, written as a partitioned Parquet dataset.

The recordings are split into parts of a few files; each part is one Dask task
that loads the model once per worker process, annotates its files with the
same code as a local run (:func:`sercli.pipeline.annotate_files`) and
writes ``part-NNNNN-HASH.parquet`` atomically into the output folder, which
therefore must be on storage every worker can reach, like the recordings. The
folder reads back as one table with ``pandas.read_parquet(folder)``. A
resumed run skips the parts already written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from sercli.files import path_text
from sercli.groups import RecordingGroup
from sercli.model import Classifier, load_classifier
from sercli.pipeline import FileOutcome, annotate_groups
from sercli.vad import VadConfig
from sercli.writers import results_frame, sort_results, write_results

FILES_PER_PART = 16


def part_names(
    groups: list[RecordingGroup], files_per_part: int = FILES_PER_PART
) -> list[tuple[list[RecordingGroup], str]]:
    """Pack whole normalisation groups into parts of about ``files_per_part`` recordings (a larger
    group is a part of its own), each named by its position and a digest of its recordings' paths."""
    chunks: list[list[RecordingGroup]] = []
    size = files_per_part
    for group in groups:
        if size + len(group.members) > files_per_part:
            chunks.append([])
            size = 0
        chunks[-1].append(group)
        size += len(group.members)
    parts = []
    for index, chunk in enumerate(chunks):
        paths = [str(member.source) for group in chunk for member in group.members]
        digest = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:12]
        parts.append((chunk, f"part-{index:05d}-{digest}.parquet"))
    return parts


def dask_client(address: str, workers: int):
    """A Dask client: of a local cluster of ``workers`` single-threaded processes (``address``
    ``"local"``; the client stops it when closed), or of the scheduler at ``address``."""
    from distributed import Client

    if address == "local":
        return Client(n_workers=workers, threads_per_worker=1, dashboard_address=None)
    return Client(address)


def annotate_on_dask(
    client,
    groups: list[RecordingGroup],
    model_path: Path,
    vad: VadConfig,
    output: Path,
    metadata: dict,
    resume: bool = False,
    on_part: Callable[[list[FileOutcome]], None] = lambda _: None,
    files_per_part: int = FILES_PER_PART,
    normalization: str = "auto",
) -> None:
    """Annotate normalisation groups on a Dask cluster into the Parquet dataset folder ``output``.

    Parameters
    ----------
    client : distributed.Client
        Connected to the cluster.
    groups : list of RecordingGroup
        Recordings (:func:`sercli.groups.plan_groups`), as every worker sees them: a
        group is never split between parts.
    model_path : Path
        The model, as every worker sees it.
    output : Path
        Dataset folder (created); parts appear in it as they finish.
    metadata : dict
        Stored in every part's Parquet metadata.
    resume : bool
        Skip parts whose file already exists.
    on_part : callable
        Called in the client with each finished part's outcomes (rows dropped).
    normalization : str
        What the groups were planned for (see :func:`sercli.pipeline.model_normalization`).
    """
    from distributed import as_completed

    output.mkdir(parents=True, exist_ok=True)
    todo = [(chunk, output / name) for chunk, name in part_names(groups, files_per_part)]
    if resume:
        todo = [(chunk, part) for chunk, part in todo if not part.exists()]
    futures = [
        client.submit(annotate_part, chunk, part, model_path, vad, metadata, normalization, pure=False)
        for chunk, part in todo
    ]
    for future in as_completed(futures):
        on_part(future.result())


def annotate_part(
    groups: list[RecordingGroup], part: Path, model_path: Path, vad: VadConfig, metadata: dict, normalization: str
) -> list[FileOutcome]:
    """Annotate one part's groups on a worker and write them as one Parquet file, with the group of
    each recording in its metadata.

    Returns
    -------
    list of FileOutcome
        Each recording's outcome, without its rows (they are in the file).
    """
    classifier = _classifier(model_path)
    outcomes = list(annotate_groups(groups, classifier, vad, normalization))
    rows = [row for outcome in outcomes for row in outcome.rows]
    groups_of = {path_text(o.path): o.group for o in outcomes if o.error is None}
    write_results(sort_results(results_frame(rows, classifier.card.labels)), part, {**metadata, "groups": groups_of})
    return [FileOutcome(o.path, [], o.error, o.audio_s, group=o.group) for o in outcomes]


@lru_cache(maxsize=2)
def _classifier(model_path: Path) -> Classifier:
    """One model per worker process, loaded on first use, one inference thread (a worker per core)."""
    return load_classifier(model_path, threads=1)
