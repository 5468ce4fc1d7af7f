"""Fault injection: bad, odd and hostile inputs in one batch, interruption and resume."""

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
from conftest import ESPEAK_RATE, sercli, speech_with_silences

from sercli.batch import CsvStream, annotate_into
from sercli.model import load_classifier
from sercli.vad import VadConfig
from sercli.writers import read_metadata, read_results

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def speech(utterances) -> np.ndarray:
    signal, _ = speech_with_silences(utterances, silence_s=1.0)
    return signal  # 22.05 kHz, three utterances


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, speech):
    """A folder of every kind of bad and odd input; returns (folder, expected outcome per file)."""
    folder = tmp_path_factory.mktemp("hostile")
    at = lambda rate: soxr.resample(speech, ESPEAK_RATE, rate)
    expect = {}  # name -> number of speech segments, or the error text expected

    (folder / "empty.wav").write_bytes(b"")
    expect["empty.wav"] = "Format not recognised"
    sf.write(folder / "zero_length.wav", np.zeros(0, np.float32), 16000)
    expect["zero_length.wav"] = "zero-length audio"
    sf.write(folder / "full.wav", at(16000), 16000)
    data = (folder / "full.wav").read_bytes()
    (folder / "header_only.wav").write_bytes(data[:44])
    expect["header_only.wav"] = "zero-length audio"
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    expect["truncated.wav"] = 2  # what is there is annotated: the first utterance and part of the second
    sf.write(folder / "full.flac", at(16000), 16000)
    flac = (folder / "full.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    expect["truncated.flac"] = "flac decoder lost sync"
    (folder / "full.flac").unlink()
    (folder / "random.wav").write_bytes(np.random.default_rng(1).bytes(20000))
    expect["random.wav"] = "Format not recognised"
    (folder / "text.wav").write_text("this is a text file\n" * 100)
    expect["text.wav"] = "Format not recognised"
    (folder / "folder.wav").mkdir()  # a directory named like audio is walked like any folder
    sf.write(folder / "unreadable.wav", at(16000), 16000)
    os.chmod(folder / "unreadable.wav", 0)
    expect["unreadable.wav"] = 3 if ROOT else "permission denied"
    (folder / "broken_link.wav").symlink_to(folder / "missing.wav")
    expect["broken_link.wav"] = "broken symbolic link"
    (folder / "loop").mkdir()
    (folder / "loop" / "back").symlink_to(folder, target_is_directory=True)
    for rate in (8000, 11025, 44100, 96000, 192000):
        sf.write(folder / f"rate_{rate}.wav", at(rate), rate)
        expect[f"rate_{rate}.wav"] = 3
    sf.write(folder / "pcm_u8.wav", at(16000), 16000, subtype="PCM_U8")
    sf.write(folder / "pcm_24.wav", at(48000), 48000, subtype="PCM_24")
    expect["pcm_u8.wav"] = expect["pcm_24.wav"] = 3
    poisoned = at(16000).copy()
    poisoned[1000:1100], poisoned[5000], poisoned[9000] = np.nan, np.inf, -np.inf
    sf.write(folder / "float_nan_inf.wav", poisoned, 16000, subtype="FLOAT")
    expect["float_nan_inf.wav"] = 3
    sf.write(folder / "clipped.wav", np.clip(at(16000) * 30, -1, 1), 16000)
    sf.write(folder / "dc_offset.wav", np.clip(0.5 * at(16000) + 0.4, -1, 1), 16000, subtype="FLOAT")
    expect["clipped.wav"] = expect["dc_offset.wav"] = 3
    sf.write(folder / "silence.wav", np.zeros(16000 * 4, np.float32), 16000)
    expect["silence.wav"] = 0
    sf.write(folder / "noise.wav", np.random.default_rng(2).normal(0, 0.01, 16000 * 4), 16000)
    expect["noise.wav"] = None  # any number of segments, but a row and no error
    short = at(16000)[int(0.5 * 16000) : int(0.9 * 16000)]
    sf.write(folder / "short.wav", short, 16000)
    expect["short.wav"] = 1
    sf.write(folder / "six_channels.wav", np.repeat(at(48000)[:, None], 6, axis=1), 48000)
    expect["six_channels.wav"] = 3
    sf.write(folder / "ünïcødé name with spaces.wav", at(16000), 16000)
    expect["ünïcødé name with spaces.wav"] = 3
    shutil.copy(folder / "full.wav", folder / "duplicate.wav")
    expect["full.wav"] = expect["duplicate.wav"] = 3
    header = bytearray(data)
    header[24:28], header[28:32] = (1).to_bytes(4, "little"), (2).to_bytes(4, "little")  # 1 Hz, 2 bytes/s
    (folder / "rate_1hz_header.wav").write_bytes(bytes(header))
    expect["rate_1hz_header.wav"] = "sample rate 1 Hz is outside"
    os.mkfifo(folder / "fifo.wav")  # opening it would wait forever for a writer
    expect["fifo.wav"] = "not a regular file"
    yield folder, expect
    os.chmod(folder / "unreadable.wav", 0o644)


@pytest.fixture(scope="module")
def hostile_run(hostile, random_model, tmp_path_factory):
    folder, _ = hostile
    out = tmp_path_factory.mktemp("out") / "results.csv"
    command = [
        sys.executable,
        "-m",
        "sercli",
        "annotate",
        folder,
        "-o",
        out,
        "--model",
        random_model.with_suffix(".tflite"),
    ]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_PROBE, *map(str, command)], check=True, capture_output=True, text=True
    )
    code, peak_mb = map(int, result.stdout.split()[:2])
    assert code == 3, result.stderr
    errors = pd.read_csv(out.with_name("results.csv.errors.csv"))
    return read_results(out), errors, result.stderr, peak_mb


PEAK_RSS_PROBE = (
    "import resource, subprocess, sys; "
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); sys.stderr.write(r.stderr); "
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); print(r.stdout)"
)
"""Runs a command and prints its exit code and peak RSS in MB, then its stdout; its stderr passes through."""


def test_hostile_files_are_annotated_in_bounded_memory(hostile_run):
    assert hostile_run[3] < 1024, f"peak RSS {hostile_run[3]} MB"


def test_every_file_is_either_annotated_or_reported_with_its_cause(hostile, hostile_run):
    folder, expect = hostile
    table, errors, stderr, _ = hostile_run
    rows = table["path"].map(lambda p: os.path.relpath(p, folder))
    failed = dict(zip(errors["path"].map(lambda p: os.path.relpath(p, folder)), errors["error"]))
    assert set(rows) | set(failed) == set(expect), "each file appears exactly once, in one place"
    assert not set(rows) & set(failed)
    for name, outcome in expect.items():
        if isinstance(outcome, str):
            assert outcome.lower() in failed[name].lower(), name
            assert f"{folder / name}: " in stderr
            assert "\n" not in failed[name]
        elif outcome == 0:
            (row,) = table[rows == name].itertuples()
            assert row.segment == 0 and pd.isna(row.label)
        elif outcome is not None:
            assert (rows == name).sum() == outcome, name
            assert table[rows == name]["label"].notna().all(), name


def test_symlink_loop_is_walked_once(hostile_run):
    table, errors, _, _ = hostile_run
    assert not any("/loop/" in p for p in list(table["path"]) + list(errors["path"]))


def test_duplicate_contents_give_identical_rows(hostile, hostile_run):
    folder, _ = hostile
    table, _, _, _ = hostile_run
    first = table[table["path"] == str(folder / "full.wav")].drop(columns="path").reset_index(drop=True)
    second = table[table["path"] == str(folder / "duplicate.wav")].drop(columns="path").reset_index(drop=True)
    pd.testing.assert_frame_equal(first, second)


def test_unicode_and_spaces_in_paths_survive_csv(hostile, hostile_run):
    folder, _ = hostile
    table, _, _, _ = hostile_run
    assert str(folder / "ünïcødé name with spaces.wav") in set(table["path"])


def test_a_file_deleted_after_listing_is_reported_and_the_rest_annotated(random_model, tmp_path, speech):
    paths = []
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(tmp_path / name, speech, ESPEAK_RATE)
        paths.append(tmp_path / name)
    (tmp_path / "b.wav").unlink()  # gone between the folder walk and its turn to be decoded
    outcomes = []
    with open(tmp_path / "out.csv", "w") as handle:
        sink = CsvStream(handle)
        annotate_into(paths, load_classifier(random_model.with_suffix(".tflite")), VadConfig(), sink, outcomes.append)
    assert [(o.path.name, o.error) for o in outcomes] == [("a.wav", None), ("b.wav", "file not found"), ("c.wav", None)]
    assert set(pd.read_csv(tmp_path / "out.csv")["path"]) == {str(paths[0]), str(paths[2])}


def test_a_signal_while_a_recording_is_saved_waits_until_it_is_heard_of(random_model, tmp_path, speech):
    """The kernel may hand SIGHUP to any thread (here the one that sends it, while the main thread
    adds a recording's rows): the run stops only after ``on_outcome`` has heard of that recording."""
    paths = []
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(tmp_path / name, speech, ESPEAK_RATE)
        paths.append(tmp_path / name)

    class SignalledStream(CsvStream):
        def add(self, outcome):
            super().add(outcome)
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGHUP))
            sender.start()
            sender.join()
            self.added = [*getattr(self, "added", []), outcome.path]

    def stop(_number, _frame):
        raise KeyboardInterrupt

    heard = []
    previous = signal.signal(signal.SIGHUP, stop)
    try:
        with open(tmp_path / "out.csv", "w") as handle, pytest.raises(KeyboardInterrupt):
            sink = SignalledStream(handle)
            classifier = load_classifier(random_model.with_suffix(".tflite"))
            annotate_into(paths, classifier, VadConfig(), sink, lambda outcome: heard.append(outcome.path))
        assert signal.getsignal(signal.SIGHUP) is stop  # put back when the run ends
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert heard == sink.added == paths[:1]


@pytest.fixture(scope="module")
def many(tmp_path_factory, speech):
    folder = tmp_path_factory.mktemp("many")
    for i in range(150):  # enough that a run is still going when it is interrupted
        sf.write(folder / f"rec_{i:03d}.wav", speech, ESPEAK_RATE)
    return folder


@pytest.fixture(scope="module")
def complete(many, random_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("complete") / "results.csv"
    sercli("annotate", many, "-o", out, "--model", random_model.with_suffix(".tflite"))
    return read_results(out)


@pytest.mark.parametrize(
    ("stop", "code"), [(signal.SIGKILL, -9), (signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_interrupted_run_keeps_whole_files_and_resume_completes_without_duplicates(
    many, random_model, complete, tmp_path, stop, code
):
    out = tmp_path / "results.csv"
    command = [sys.executable, "-m", "sercli", "annotate", many, "-o", out, "-m", random_model.with_suffix(".tflite")]
    # A background job inherits SIGINT ignored, and Python then keeps ignoring it: restore the default.
    process = subprocess.Popen(
        [*map(str, command), "--checkpoint-every", "0.001"],
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads yet
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and len(read_results(out)) >= 9) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(stop)
    assert process.wait(30) == code
    partial = read_results(out)  # always a valid table
    done = set(partial["path"])
    assert 3 <= len(done) < 150, "stopped mid-run"
    assert len(partial) == 3 * len(done), "only whole files, no duplicates"
    assert not list(tmp_path.glob(".*.partial")) or stop == signal.SIGKILL
    sercli(*command[3:], "--resume")
    resumed = read_results(out)
    pd.testing.assert_frame_equal(resumed, complete)
    assert not list(tmp_path.glob(".*.partial")), "stale temporary files are cleaned up"


def test_output_inside_the_input_folder_is_not_taken_as_input(many, random_model, complete):
    out = many / "results.csv"
    try:
        sercli("annotate", many, "-o", out, "--model", random_model.with_suffix(".tflite"))
        sercli("annotate", many, "-o", out, "--model", random_model.with_suffix(".tflite"), "--resume")
        assert set(read_results(out)["path"]) == set(complete["path"])
    finally:
        out.unlink(missing_ok=True)


def test_resume_refuses_an_output_that_is_not_a_results_table(many, random_model, tmp_path):
    out = tmp_path / "results.csv"
    out.write_text("a,b\n1,2\n")
    result = sercli("annotate", many, "-o", out, "-m", random_model.with_suffix(".tflite"), "--resume", code=1)
    assert "cannot resume" in result.stderr and "missing columns" in result.stderr
    assert out.read_text() == "a,b\n1,2\n"


def test_a_ten_hour_file_streams_through_in_bounded_memory(random_model, utterances, tmp_path):
    """10 h at 8 kHz, silent but for one utterance in the middle of every hour."""
    rate, block_s = 8000, 600
    utterance = soxr.resample(utterances[0], ESPEAK_RATE, rate)
    path = tmp_path / "ten_hours.flac"
    with sf.SoundFile(path, "w", rate, 1, format="FLAC") as handle:
        for block in range(10 * 3600 // block_s):
            samples = np.zeros(block_s * rate, np.float32)
            if block % 6 == 3:  # 30 minutes into each hour
                samples[: len(utterance)] = utterance
            handle.write(samples)
    command = [sys.executable, "-m", "sercli", "annotate", path, "-m", random_model.with_suffix(".tflite"), "-o", "-"]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_PROBE, *map(str, command)], check=True, capture_output=True, text=True
    )
    status, table = result.stdout.split("\n", 1)
    code, peak_mb = map(int, status.split())
    assert code == 0
    assert peak_mb < 500, f"peak RSS {peak_mb} MB"
    rows = pd.read_csv(io.StringIO(table))
    assert len(rows) == 10
    np.testing.assert_allclose(rows["start_s"], [3600 * h + 1800 for h in range(10)], atol=0.2)


def test_resume_refuses_other_settings_unless_forced(many, random_model, complete, tmp_path):
    out = tmp_path / "results.csv"
    model = random_model.with_suffix(".tflite")
    sercli("annotate", many, "-o", out, "-m", model)
    before = out.read_text()
    result = sercli("annotate", many, "-o", out, "-m", model, "--resume", "--aggressiveness", "3", code=1)
    assert "other VAD settings" in result.stderr and "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert out.read_text() == before
    sercli("annotate", many, "-o", out, "-m", model, "--resume", "--aggressiveness", "3", "--force")


def test_resume_matches_recordings_however_the_folder_is_spelled(many, random_model, complete, tmp_path):
    out = tmp_path / "results.parquet"
    model = random_model.with_suffix(".tflite")
    sercli("annotate", many, "-o", out, "-m", model)
    relative = os.path.relpath(many, tmp_path)
    sercli("annotate", relative, "-o", out.name, "-m", model, "--resume", cwd=tmp_path)
    assert len(read_results(out)) == len(complete)


def test_a_second_writer_on_the_same_output_is_refused(many, random_model, tmp_path):
    import fcntl

    out = tmp_path / "results.csv"
    with open(tmp_path / ".results.csv.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sercli holds it
        result = sercli("annotate", many, "-o", out, "-m", random_model.with_suffix(".tflite"), code=1)
    assert "another sercli run is writing" in result.stderr
    assert not out.exists()
    sercli("annotate", many, "-o", out, "-m", random_model.with_suffix(".tflite"))
    assert out.exists() and not list(tmp_path.glob(".*.lock")), "the lock file goes with the run"


@pytest.mark.parametrize("case", ["missing folder", "directory"])
def test_an_unwritable_output_is_found_before_any_work(many, random_model, tmp_path, case):
    out = tmp_path / "no" / "such" / "folder" / "results.csv"
    extra = []
    if case == "directory":
        out = tmp_path / "results.csv"
        out.mkdir()
        extra = ["--overwrite"]
    started = time.monotonic()
    result = sercli("annotate", many, "-o", out, "-m", random_model.with_suffix(".tflite"), *extra, code=1)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert str(out) in result.stderr
    assert time.monotonic() - started < 10  # refused at once, not after annotating 150 files


def test_csv_metadata_is_kept_beside_it_and_survives_export(many, random_model, tmp_path):
    out = tmp_path / "results.csv"
    sercli("annotate", many, "-o", out, "-m", random_model.with_suffix(".tflite"))
    metadata = read_metadata(out)
    assert metadata["model"]["name"] == "random" and metadata["vad"]["aggressiveness"] == 2
    sercli("export", out, tmp_path / "results.parquet")
    assert read_metadata(tmp_path / "results.parquet") == metadata


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_any_bytes_in_a_name_round_trip_through_outputs_and_resume(speech, random_model, tmp_path, suffix):
    folder = tmp_path / "in"
    folder.mkdir()
    root = os.fsencode(folder)
    sf.write(folder / "speech.wav", speech, ESPEAK_RATE)
    os.rename(root + b"/speech.wav", root + b"/not_utf8_\xff.wav")  # soundfile cannot name it, the OS can
    sf.write(folder / "carriage\rreturn.wav", speech, ESPEAK_RATE)
    with open(root + b"/bad_\xfe.wav", "wb") as handle:
        handle.write(b"not audio at all")
    out = tmp_path / f"results{suffix}"
    model = random_model.with_suffix(".tflite")
    first = sercli("annotate", folder, "-o", out, "-m", model, code=3)
    table = read_results(out)
    assert set(table["path"]) == {f"{folder}/not_utf8_\\xff.wav", f"{folder}/carriage\\x0dreturn.wav"}
    assert len(table) == 6
    errors = pd.read_csv(out.with_name(out.name + ".errors.csv"))
    assert list(errors["path"]) == [f"{folder}/bad_\\xfe.wav"]
    assert f"{folder}/bad_\\xfe.wav: Format not recognised" in first.stderr
    sercli("annotate", folder, "-o", out, "-m", model, "--resume", code=3)
    pd.testing.assert_frame_equal(read_results(out), table)


def test_a_file_growing_while_read_is_noted(tmp_path):
    from sercli.pipeline import _DecodeAhead

    notes = {}
    for grows in (False, True):
        path = tmp_path / f"growing_{grows}.wav"
        sf.write(path, np.zeros(10 * (1 << 18), np.float32), 16000, subtype="PCM_16")  # 10 blocks, 4 read ahead
        decoded = _DecodeAhead([path], 16000)
        try:
            for _, blocks in decoded:
                next(blocks)
                if grows:  # a recorder still writing it
                    with open(path, "ab") as handle:
                        handle.write(bytes(4096))
                assert sum(1 for _ in blocks) >= 9
        finally:
            decoded.stop()
        notes[grows] = decoded.notes.get(path)
    assert notes[False] is None
    assert "size changed while it was read" in notes[True]
