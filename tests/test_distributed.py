"""The Dask path on a local cluster started by the test: same rows as a local run, resumable parts."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import ESPEAK_RATE, sercli, speech_with_silences

from sercli.distributed import annotate_on_dask, part_names
from sercli.files import find_audio_files, path_text
from sercli.groups import plan_groups
from sercli.model import load_classifier
from sercli.pipeline import annotate_files
from sercli.vad import VadConfig
from sercli.writers import RESULT_COLUMNS, conform, read_metadata, read_results, results_frame, sort_results

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, utterances):
    folder = tmp_path_factory.mktemp("recordings")
    signal, _ = speech_with_silences(utterances, silence_s=0.8)
    for i in range(7):
        sf.write(folder / f"rec_{i}.wav", signal[: len(signal) * (i + 3) // 10], ESPEAK_RATE)
    (folder / "broken.wav").write_bytes(b"RIFF nonsense")
    return folder


@pytest.fixture(scope="module")
def local_rows(recordings, random_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "rows.parquet"
    command = ["annotate", recordings, "-o", out, "-m", random_model.with_suffix(".tflite")]
    subprocess.run([sys.executable, "-m", "sercli", *map(str, command)], check=False, capture_output=True)
    return read_results(out)


def test_local_worker_processes_give_the_same_rows_as_one_process(recordings, random_model, local_rows, tmp_path):
    out = tmp_path / "rows.parquet"
    command = ["annotate", recordings, "-o", out, "-m", random_model.with_suffix(".tflite"), "--workers", "2"]
    sercli(*command, code=3)  # broken.wav
    pd.testing.assert_frame_equal(read_results(out), local_rows)


def test_dask_cluster_gives_the_same_rows_as_a_local_run(recordings, random_model, local_rows, tmp_path):
    paths = find_audio_files([recordings])
    groups = plan_groups(paths, "none")  # what the CLI's default gives for a model trained without it
    seen = []
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        annotate_on_dask(
            client,
            groups,
            random_model.with_suffix(".tflite"),
            VadConfig(),
            tmp_path / "dataset",
            {"run": 1},
            on_part=seen.extend,
            files_per_part=3,
            normalization="none",
        )
    parts = sorted(p.name for p in (tmp_path / "dataset").glob("*.parquet"))
    assert parts == [name for _, name in part_names(groups, 3)] and len(parts) == 3
    dataset = sort_results(conform(pd.read_parquet(tmp_path / "dataset")))
    assert list(dataset.columns) == list(RESULT_COLUMNS)
    pd.testing.assert_frame_equal(dataset, local_rows, atol=1e-5)
    assert sorted(str(o.path) for o in seen) == sorted(map(str, paths))
    assert [o.error for o in seen if o.path.name == "broken.wav"] == ["Format not recognised."]


def test_auto_groups_on_dask_give_the_rows_and_groups_of_a_local_run(recordings, normalized_model, tmp_path):
    paths = find_audio_files([recordings])
    sf.write(recordings.parent / "long.wav", np.tile(sf.read(paths[-1])[0], 4), ESPEAK_RATE)
    paths = [*paths, recordings.parent / "long.wav"]  # at least AUTO_OWN_GROUP_S: a group of its own
    groups = plan_groups(paths, "auto")
    assert sorted(g.name.split()[0] for g in groups) == ["folder", "recording"]
    local = list(annotate_files(paths, load_classifier(normalized_model), VadConfig(), normalization="auto"))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        annotate_on_dask(client, groups, normalized_model, VadConfig(), tmp_path / "d", {}, files_per_part=2)
    rows = sort_results(conform(pd.read_parquet(tmp_path / "d")))
    expected = sort_results(
        results_frame([r for o in local for r in o.rows], load_classifier(normalized_model).card.labels)
    )
    pd.testing.assert_frame_equal(rows, expected, atol=1e-5)
    written = {}
    for part in (tmp_path / "d").glob("*.parquet"):
        written.update(read_metadata(part)["groups"])
    assert written == {path_text(o.path): o.group for o in local if o.error is None}


def test_cli_on_a_local_dask_cluster_resumes_by_part(recordings, random_model, local_rows, tmp_path):
    dataset = tmp_path / "dataset"
    command = [
        sys.executable,
        "-m",
        "sercli",
        "annotate",
        recordings,
        "-o",
        dataset,
        "--dask",
        "local",
        "--workers",
        "2",
    ]
    command += ["-m", random_model.with_suffix(".tflite")]
    first = subprocess.run(list(map(str, command)), check=False, capture_output=True, text=True)
    assert first.returncode == 3, first.stderr  # broken.wav
    assert pd.read_csv(dataset / "errors.csv")["path"].str.endswith("broken.wav").all()
    (part,) = sorted(dataset.glob("part-*.parquet"))  # 8 files fit one part of 16
    stamp = part.stat().st_mtime_ns
    again = subprocess.run(list(map(str, command)), check=False, capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr
    resumed = subprocess.run([*map(str, command), "--resume"], check=False, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert part.stat().st_mtime_ns == stamp, "finished parts are not redone"
    table = sort_results(conform(pd.read_parquet(dataset)))
    pd.testing.assert_frame_equal(table, local_rows, atol=1e-5)
