"""The hostile-input campaign's findings (issue 20): each one, made again, fails cleanly or not at all."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import sercli
from test_faults import PEAK_RSS_PROBE, ROOT

import sercli as api
from sercli.writers import read_metadata, read_results, write_results


@pytest.fixture(scope="module")
def folder(tmp_path_factory, speech_16k):
    """Six recordings of the three utterances, at different gains."""
    root = tmp_path_factory.mktemp("folder")
    for i in range(6):
        sf.write(root / f"rec_{i}.wav", speech_16k * (0.2 + 0.15 * i), 16000)
    return root


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def run_probe(*command) -> tuple[int, int, str, str]:
    """Run ``python -m sercli COMMAND``; its exit code, peak RSS in MB, stdout and stderr."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_PROBE, sys.executable, "-m", "sercli", *map(str, command)],
        check=True,
        capture_output=True,
        text=True,
    )
    status, stdout = result.stdout.split("\n", 1)
    code, peak_mb = map(int, status.split())
    return code, peak_mb, stdout, result.stderr


# --- tracebacks ---------------------------------------------------------------------------------


def test_file_symlink_loops_are_reported_and_the_batch_goes_on(tmp_path, speech_16k, tflite_model):
    sf.write(tmp_path / "good.wav", speech_16k, 16000)
    (tmp_path / "a.wav").symlink_to(tmp_path / "b.wav")
    (tmp_path / "b.wav").symlink_to(tmp_path / "a.wav")
    (tmp_path / "self.wav").symlink_to(tmp_path / "self.wav")
    out = tmp_path / "out" / "results.csv"
    out.parent.mkdir()
    result = sercli("annotate", tmp_path, "-o", out, "-m", tflite_model, code=3)
    assert set(read_results(out)["path"]) == {str(tmp_path / "good.wav")}
    errors = pd.read_csv(out.with_name("results.csv.errors.csv"))
    assert sorted(errors["path"].map(os.path.basename)) == ["a.wav", "b.wav", "self.wav"]
    assert set(errors["error"]) == {"symbolic link loop"}
    assert f"{tmp_path / 'self.wav'}: symbolic link loop" in result.stderr and "Traceback" not in result.stderr


def test_a_full_stdout_is_one_line_error(folder, tflite_model):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "sercli", "annotate", str(folder), "-m", str(tflite_model), "-q"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert result.returncode == 1
    one_line_error(result, "cannot write to <stdout>: No space left on device")


@pytest.fixture(scope="module")
def results(folder, tflite_model, tmp_path_factory):
    """The complete CSV of ``folder`` (with its metadata)."""
    out = tmp_path_factory.mktemp("results") / "results.csv"
    sercli("annotate", folder, "-o", out, "-m", tflite_model)
    return out


@pytest.mark.parametrize("damage", ["unknown label", "missing probability column"])
def test_plot_refuses_labels_without_a_probability_column(results, tmp_path, damage):
    pytest.importorskip("matplotlib")
    table = read_results(results)
    if damage == "unknown label":
        table.loc[2, "label"] = "bored"  # the first row without a probability column
    else:
        table = table.drop(columns=f"prob_{table.loc[2, 'label']}")
    write_results(table, tmp_path / "damaged.csv")
    result = sercli("plot", tmp_path / "damaged.csv", "-o", tmp_path / "plots", code=1)
    row = int(np.flatnonzero(table["label"] == table.loc[2, "label"])[0]) + 1  # the first row of that label
    one_line_error(result, f"damaged.csv row {row}: label", "has no prob_")


def _wait_for_entry_point(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Until ``python -m sercli`` has taken Ctrl-C over: its entry point starts a thread (the stderr filter)
    right after. A Ctrl-C in Python's own start-up, before any of sercli's code runs, is Python's to report."""
    tasks = Path(f"/proc/{process.pid}/task")
    deadline = time.monotonic() + timeout_s
    while len(list(tasks.iterdir())) < 2:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)


def test_ctrl_c_during_start_up_is_one_line(folder, tflite_model, tmp_path):
    for delay_s in (0.0, 0.2, 0.5):  # in the imports, loading the model, walking the folder
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sercli",
                "annotate",
                str(folder),
                "-m",
                str(tflite_model),
                "-o",
                str(tmp_path / "x.csv"),
            ],
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads yet
        )
        _wait_for_entry_point(process)
        time.sleep(delay_s)
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
        stderr = process.stderr.read()
        if "annotated 6 of 6 files" in stderr:
            continue  # it finished first (a signal during the interpreter's shutdown may still kill it)
        assert code == 130, stderr
        assert "Traceback" not in stderr and "error: interrupted" in stderr, stderr


def test_an_empty_signal_in_memory_is_an_error_not_a_crash(tflite_model):
    annotator = api.Annotator(tflite_model)
    table = annotator.annotate_signal(np.zeros((1000, 0), np.float32), 16000, name="empty")
    assert table.empty and "not empty" in table.attrs["errors"]["empty"]


@pytest.mark.parametrize("threads", [-3, 0, 1.5, True])
def test_threads_must_be_a_positive_integer(tflite_model, threads):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        api.Annotator(tflite_model, threads=threads)


# --- memory -------------------------------------------------------------------------------------


def test_evaluate_scores_a_clip_named_by_many_rows_once(tmp_path, speech_16k, tflite_model):
    sf.write(tmp_path / "clip.wav", speech_16k, 16000)
    rows = 20_000
    pd.DataFrame({"path": ["clip.wav"] * rows, "label": ["angry", "sad"] * (rows // 2)}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    code, peak_mb, stdout, stderr = run_probe("evaluate", tmp_path / "labels.csv", "-m", tflite_model, "--json")
    assert code == 0, stderr
    assert peak_mb < 1024, f"peak RSS {peak_mb} MB"
    metrics = json.loads(stdout)
    assert metrics["n"] == rows and sum(map(sum, metrics["confusion"])) == rows


def test_a_header_claiming_1024_channels_is_read_in_bounded_memory(tmp_path, tflite_model):
    path = tmp_path / "channels.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 16000 * 60), 16000, subtype="PCM_16")
    header = bytearray(path.read_bytes())
    header[22:24] = (1024).to_bytes(2, "little")  # channels
    header[28:32] = (16000 * 2 * 1024).to_bytes(4, "little")  # bytes per second
    header[32:34] = (2 * 1024).to_bytes(2, "little")  # bytes per frame
    path.write_bytes(bytes(header))
    code, peak_mb, _, stderr = run_probe("annotate", path, "-m", tflite_model, "-o", tmp_path / "out.csv")
    assert code in (0, 3) and "Traceback" not in stderr, stderr
    assert peak_mb < 1024, f"peak RSS {peak_mb} MB"


@pytest.mark.slow
def test_plot_memory_does_not_grow_with_the_recordings(tmp_path, results):
    """A figure left open per recording would add about 6 MB each: 570 MB for the 90 more (measured)."""
    pytest.importorskip("matplotlib")
    table = read_results(results)
    peaks = []
    for n in (10, 100):
        copies = pd.concat([table.assign(path=f"{tmp_path}/rec_{i:04d}.wav") for i in range(n)], ignore_index=True)
        write_results(copies, tmp_path / f"many_{n}.csv")
        code, peak_mb, _, stderr = run_probe("plot", tmp_path / f"many_{n}.csv", "-o", tmp_path / f"plots_{n}")
        assert code == 0, stderr
        assert len(list((tmp_path / f"plots_{n}").glob("*.png"))) == n + 1  # one per recording and a summary
        peaks.append(peak_mb)
    assert peaks[1] - peaks[0] < 48, f"peak RSS {peaks[0]} MB for 10 recordings, {peaks[1]} MB for 100"


# --- lost or duplicated rows --------------------------------------------------------------------


def drop_recordings(out, keep: int) -> None:
    """Leave the first ``keep`` recordings' rows in a results file, as a killed run leaves it."""
    table, metadata = read_results(out), read_metadata(out)
    first = list(dict.fromkeys(table["path"]))[:keep]
    if metadata:
        metadata["groups"] = {path: group for path, group in metadata.get("groups", {}).items() if path in first}
    write_results(table[table["path"].isin(first)].reset_index(drop=True), out, metadata)


def test_folder_normalisation_resumed_equals_an_uninterrupted_run(folder, normalized_model, tmp_path):
    out = tmp_path / "results.csv"
    options = ["-m", normalized_model, "--normalize", "folder"]
    sercli("annotate", folder, "-o", out, *options)
    complete = read_results(out)
    drop_recordings(out, 2)
    sercli("annotate", folder, "-o", out, *options, "--resume")
    pd.testing.assert_frame_equal(read_results(out), complete)


def test_a_file_and_a_link_to_it_are_both_annotated_and_resumed(tmp_path, speech_16k, tflite_model):
    sf.write(tmp_path / "a.wav", speech_16k, 16000)
    (tmp_path / "z_link.wav").symlink_to(tmp_path / "a.wav")
    out = tmp_path / "results.parquet"
    sercli("annotate", tmp_path, "-o", out, "-m", tflite_model)
    complete = read_results(out)
    assert set(complete["path"]) == {str(tmp_path / "a.wav"), str(tmp_path / "z_link.wav")}
    drop_recordings(out, 1)
    sercli("annotate", tmp_path, "-o", out, "-m", tflite_model, "--resume")
    pd.testing.assert_frame_equal(read_results(out), complete)


@pytest.mark.skipif(ROOT, reason="root lists any folder")
def test_an_unreadable_subfolder_is_reported(tmp_path, speech_16k, tflite_model):
    sf.write(tmp_path / "a.wav", speech_16k, 16000)
    (tmp_path / "locked").mkdir()
    sf.write(tmp_path / "locked" / "b.wav", speech_16k, 16000)
    os.chmod(tmp_path / "locked", 0)
    try:
        result = sercli("annotate", tmp_path, "-m", tflite_model, "-q", code=3)
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert f"{tmp_path / 'locked'}: folder cannot be listed (permission denied)" in result.stderr


def test_one_file_named_by_relative_and_absolute_paths_is_annotated_once(folder, tflite_model):
    result = sercli("annotate", "rec_0.wav", folder / "rec_0.wav", "./rec_0.wav", "-m", tflite_model, "-q", cwd=folder)
    rows = pd.read_csv(io.StringIO(result.stdout))
    assert rows["segment"].tolist() == [1, 2, 3] and rows["path"].nunique() == 1


# --- wrong results ------------------------------------------------------------------------------


def test_resume_force_with_nothing_to_do_keeps_the_metadata(results, folder, tflite_model, tmp_path):
    out = tmp_path / "results.csv"
    write_results(read_results(results), out, read_metadata(results))
    before = out.read_text(), out.with_name("results.csv.meta.json").read_text()
    result = sercli("annotate", folder, "-o", out, "-m", tflite_model, "--resume", "--force", "--aggressiveness", "3")
    assert "nothing to do" in result.stderr
    assert (out.read_text(), out.with_name("results.csv.meta.json").read_text()) == before


def test_resume_with_more_to_do_under_force_records_the_earlier_settings(results, folder, tflite_model, tmp_path):
    out = tmp_path / "results.csv"
    write_results(read_results(results), out, read_metadata(results))
    drop_recordings(out, 3)
    sercli("annotate", folder, "-o", out, "-m", tflite_model, "--resume", "--force", "--aggressiveness", "3")
    metadata = read_metadata(out)
    assert metadata["vad"]["aggressiveness"] == 3 and metadata["earlier_settings"]["vad"]["aggressiveness"] == 2


def test_a_csv_without_its_metadata_resumes_only_when_forced(results, folder, tflite_model, tmp_path):
    out = tmp_path / "results.csv"
    write_results(read_results(results), out)  # no .meta.json
    drop_recordings(out, 3)
    result = sercli("annotate", folder, "-o", out, "-m", tflite_model, "--resume", code=1)
    one_line_error(result, "no metadata", "--force")
    sercli("annotate", folder, "-o", out, "-m", tflite_model, "--resume", "--force")
    assert len(set(read_results(out)["path"])) == 6


def test_a_csv_cut_mid_row_is_refused_by_export_and_repaired_by_resume(results, folder, tflite_model, tmp_path):
    out = tmp_path / "results.csv"
    write_results(read_results(results), out, read_metadata(results))
    text = out.read_text()
    out.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 25])  # 24 characters into the last row
    result = sercli("export", out, tmp_path / "x.parquet", code=1)
    one_line_error(result, "middle of a row")
    sercli("annotate", folder, "-o", out, "-m", tflite_model, "--resume")
    resumed = read_results(out)
    assert resumed.notna().all(axis=None)
    pd.testing.assert_frame_equal(resumed, read_results(results))


def test_label_export_stays_inside_its_folder(results, tmp_path):
    from sercli.writers import write_labels

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    table = read_results(results).assign(path="../../x.wav")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        written = write_labels(table, tmp_path / "labels", "audacity")
    finally:
        os.chdir(cwd)
    assert written == [tmp_path / "labels" / "x.txt"]
    assert not (tmp_path / "x.txt").exists()


def test_integer_and_channels_first_signals_are_at_their_full_scale(speech_16k, tflite_model):
    annotator = api.Annotator(tflite_model)
    reference = annotator.annotate_signal(speech_16k, 16000)
    pcm16 = np.round(speech_16k * 32767).astype(np.int16)
    pd.testing.assert_frame_equal(annotator.annotate_signal(pcm16, 16000), reference, atol=2e-3)
    stereo_first = np.stack([pcm16, pcm16])  # (channels, n), librosa's layout
    pd.testing.assert_frame_equal(annotator.annotate_signal(stereo_first, 16000), reference, atol=2e-3)
    pcm8 = np.round(speech_16k * 127 + 128).astype(np.uint8)
    eight = annotator.annotate_signal(pcm8, 16000)
    assert eight[["start_s", "end_s"]].to_numpy() == pytest.approx(reference[["start_s", "end_s"]].to_numpy(), abs=0.05)
    assert "real numbers" in annotator.annotate_signal(np.zeros(1000, bool), 16000).attrs["errors"]["signal"]


def test_a_parquet_label_column_of_lists_is_refused(tmp_path, speech_16k):
    from sercli.datasets import DatasetError, load_clips

    sf.write(tmp_path / "a.wav", speech_16k, 16000)
    pd.DataFrame({"path": ["a.wav"], "label": [["angry"]]}).to_parquet(tmp_path / "labels.parquet")
    with pytest.raises(DatasetError, match="label holds a"):
        load_clips(tmp_path / "labels.parquet")


@pytest.mark.parametrize(
    "option",
    [("--padding", "nan"), ("--max-segment", "nan"), ("--min-speech", "inf")]
    + [("--checkpoint-every", value) for value in ("0", "-1", "nan", "inf")],
)
def test_options_that_are_not_finite_positive_numbers_are_refused(folder, tflite_model, tmp_path, option):
    result = sercli("annotate", folder, "-m", tflite_model, "-o", tmp_path / "x.csv", *option, code=1)
    one_line_error(result)
    assert not (tmp_path / "x.csv").exists()


def test_a_symlinked_output_name_shares_the_lock(folder, tflite_model, tmp_path):
    import fcntl

    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    with open(tmp_path / ".real.csv.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run writing real.csv
        result = sercli("annotate", folder, "-o", tmp_path / "link.csv", "-m", tflite_model, code=1)
    one_line_error(result, "another sercli run is writing")


def test_resume_refuses_a_changed_model_file_or_card(folder, tflite_model, tmp_path):
    copy = tmp_path / "model.tflite"
    data = bytearray(tflite_model.read_bytes())
    copy.write_bytes(bytes(data))
    copy.with_suffix(".json").write_text(tflite_model.with_suffix(".json").read_text())
    out = tmp_path / "results.csv"
    sercli("annotate", folder, "-o", out, "-m", copy)
    drop_recordings(out, 3)
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the weights
    copy.write_bytes(bytes(data))
    result = sercli("annotate", folder, "-o", out, "-m", copy, "--resume", code=1)
    one_line_error(result, "other model", "sha256")
    copy.write_bytes(tflite_model.read_bytes())  # the weights as they were, but the card given a prior
    card = json.loads(tflite_model.with_suffix(".json").read_text())
    card["normalization_prior"] = {"frames": 1000, "mean": [0.0] * 40, "std": [1.0] * 40}
    copy.with_suffix(".json").write_text(json.dumps(card))
    result = sercli("annotate", folder, "-o", out, "-m", copy, "--resume", code=1)
    one_line_error(result, "other model", "card_sha256")


# --- unclear messages ---------------------------------------------------------------------------


def test_evaluate_names_the_table_and_row_of_an_unreadable_clip(tmp_path, speech_16k, tflite_model):
    sf.write(tmp_path / "good.wav", speech_16k, 16000)
    (tmp_path / "bad.wav").write_text("not audio\n")
    pd.DataFrame({"path": ["good.wav", "bad.wav"], "label": ["angry", "sad"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    result = sercli("evaluate", tmp_path / "labels.csv", "-m", tflite_model, code=1)
    assert f"{tmp_path / 'labels.csv'} row 2: {tmp_path / 'bad.wav'}: Format not recognised" in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_headers_are_explained(tmp_path, speech_16k):
    from sercli.audio import AudioError, audio_info

    path = tmp_path / "full.wav"
    sf.write(path, speech_16k, 16000, subtype="PCM_16")
    data = path.read_bytes()
    (tmp_path / "no_data.wav").write_bytes(data[:36])  # RIFF and fmt chunks, nothing after
    header = bytearray(data)
    header[24:28] = (4_000_000_000).to_bytes(4, "little")  # 4 GHz
    (tmp_path / "4ghz.wav").write_bytes(bytes(header))
    messages = {}
    for name in ("no_data.wav", "4ghz.wav"):
        with pytest.raises(AudioError) as error:
            audio_info(tmp_path / name)
        messages[name] = str(error.value)
    assert "WAV header without audio data" in messages["no_data.wav"]
    assert "4000000000 Hz" in messages["4ghz.wav"] or "corrupt header" in messages["4ghz.wav"]
    assert not any("SF_INFO" in m or "Internal error" in m for m in messages.values())


def test_the_summary_after_sighup_counts_the_saved_recordings(tmp_path, speech_16k, tflite_model):
    for i in range(600):  # far more than it annotates before the signal, however fast
        sf.write(tmp_path / f"rec_{i:03d}.wav", speech_16k, 16000)
    out = tmp_path / "out" / "results.csv"
    out.parent.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "sercli", "annotate", str(tmp_path), "-o", str(out), "-m", str(tflite_model)]
        + ["--checkpoint-every", "0.001"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and len(read_results(out)) >= 9) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)
    assert process.wait(30) == 129
    stderr = process.stderr.read()
    saved = read_results(out)["path"].nunique()
    assert f"annotated {saved} of {saved} files" in stderr, stderr


def test_damaged_mp3_frames_add_no_decoder_chatter_to_stderr(tmp_path, speech_16k, tflite_model):
    sf.write(tmp_path / "clean.mp3", speech_16k, 16000, format="MP3")
    data = (tmp_path / "clean.mp3").read_bytes()
    middle = len(data) // 2
    (tmp_path / "damaged.mp3").write_bytes(data[:middle] + bytes(1000) + data[middle:])  # libmpg123 resyncs
    result = sercli("annotate", tmp_path, "-m", tflite_model, "-q")
    assert result.stderr == ""
    assert set(pd.read_csv(io.StringIO(result.stdout))["path"].map(os.path.basename)) == {"clean.mp3", "damaged.mp3"}


def test_a_closed_stderr_does_not_stop_the_work(folder, tflite_model):
    result = subprocess.run(
        [sys.executable, "-m", "sercli", "annotate", str(folder), "-m", str(tflite_model)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        preexec_fn=lambda: os.close(2),  # as `sercli ... 2>&-`
    )
    assert result.returncode == 0
    assert pd.read_csv(io.StringIO(result.stdout))["path"].nunique() == 6
