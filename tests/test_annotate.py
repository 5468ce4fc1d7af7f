"""The annotate and export commands end to end, as a user runs them."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import ESPEAK_RATE, sercli, speech_with_silences

from sercli import EMOTIONS
from sercli.writers import RESULT_COLUMNS, read_metadata, read_results


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, utterances):
    """speech.wav (3 utterances), b_corrupt.wav (random bytes), c_silence.wav, nested/stereo.flac (44.1 kHz)."""
    folder = tmp_path_factory.mktemp("corpus")
    signal, _ = speech_with_silences(utterances, silence_s=1.0)
    sf.write(folder / "a_speech.wav", signal, ESPEAK_RATE)
    (folder / "b_corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    sf.write(folder / "c_silence.wav", np.zeros(3 * 16000, np.float32), 16000)
    (folder / "nested").mkdir()
    stereo, _ = speech_with_silences(utterances[:2], silence_s=0.7)
    import soxr

    stereo = soxr.resample(stereo, ESPEAK_RATE, 44100)
    sf.write(folder / "nested" / "stereo.flac", np.stack([stereo, 0.5 * stereo], axis=1), 44100)
    (folder / "notes.txt").write_text("not audio")
    return folder


@pytest.fixture(scope="module")
def litert_model(random_model):
    return random_model.with_suffix(".tflite")


def test_stdout_holds_only_the_csv_and_a_bad_file_does_not_stop_the_batch(corpus, litert_model):
    result = sercli("annotate", corpus, "-o", "-", "--model", litert_model, code=3)
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table.columns) == list(RESULT_COLUMNS)
    paths = table["path"].str.replace(str(corpus) + "/", "")
    assert list(paths.unique()) == ["a_speech.wav", "c_silence.wav", "nested/stereo.flac"]
    assert (paths == "a_speech.wav").sum() == 3
    assert (paths == "nested/stereo.flac").sum() == 2
    assert "b_corrupt.wav" in result.stderr and "Format not recognised" in result.stderr


def test_rows_are_sorted_and_probabilities_are_distributions(corpus, litert_model, tmp_path):
    out = tmp_path / "results.csv"
    sercli("annotate", corpus, "-o", out, "--model", litert_model, "--quiet", code=3)
    table = read_results(out)
    assert table.equals(table.sort_values(["path", "start_s"], ignore_index=True))
    speech = table[table["label"].notna()]
    probabilities = speech[[f"prob_{e}" for e in EMOTIONS]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    assert (speech["label"] == [EMOTIONS[i] for i in probabilities.argmax(axis=1)]).all()
    np.testing.assert_allclose(speech["confidence"], probabilities.max(axis=1), atol=1e-6)
    assert (speech["end_s"] > speech["start_s"]).all()


def test_a_file_without_speech_has_one_row_without_label(corpus, litert_model, tmp_path):
    out = tmp_path / "results.csv"
    sercli("annotate", corpus / "c_silence.wav", "-o", out, "--model", litert_model)
    table = read_results(out)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["segment"] == 0 and pd.isna(row["label"]) and np.isnan(row["prob_calm"])
    assert (row["start_s"], row["end_s"]) == (0.0, 3.0)


def test_failures_are_listed_beside_the_output(corpus, litert_model, tmp_path):
    out = tmp_path / "results.csv"
    sercli("annotate", corpus, "-o", out, "--model", litert_model, code=3)
    errors = pd.read_csv(tmp_path / "results.csv.errors.csv")
    assert list(errors["path"]) == [str(corpus / "b_corrupt.wav")]
    assert errors["error"][0] == "Format not recognised."


def test_parquet_has_dtypes_and_run_metadata(corpus, litert_model, tmp_path):
    out = tmp_path / "results.parquet"
    sercli("annotate", corpus, "-o", out, "--model", litert_model, "--aggressiveness", "3", code=3)
    schema = pq.read_schema(out)
    assert schema.names == list(RESULT_COLUMNS)
    assert str(schema.field("segment").type) == "int32"
    assert str(schema.field("start_s").type) == "double"
    assert str(schema.field("prob_happy").type) == "float"
    assert str(schema.field("label").type) in ("string", "large_string")
    metadata = read_metadata(out)
    assert metadata["model"]["name"] == "random" and len(metadata["model"]["sha256"]) == 64
    assert metadata["vad"]["aggressiveness"] == 3


def test_export_round_trips_csv_and_parquet(corpus, litert_model, tmp_path):
    csv, parquet, back = tmp_path / "r.csv", tmp_path / "r.parquet", tmp_path / "back.csv"
    sercli("annotate", corpus, "-o", csv, "--model", litert_model, code=3)
    sercli("export", csv, parquet)
    sercli("export", parquet, back)
    original, converted = read_results(csv), read_results(parquet)
    pd.testing.assert_frame_equal(original, converted)
    assert back.read_text() == csv.read_text()


def test_per_file_summary(corpus, litert_model, tmp_path):
    csv, summary = tmp_path / "r.csv", tmp_path / "summary.csv"
    sercli("annotate", corpus, "-o", csv, "--model", litert_model, code=3)
    sercli("export", csv, summary, "--per-file")
    table, rows = pd.read_csv(summary), read_results(csv)
    assert len(table) == 3
    speech = table.set_index("path").loc[str(corpus / "a_speech.wav")]
    own = rows[rows["path"] == str(corpus / "a_speech.wav")]
    assert speech["segments"] == 3
    assert speech["speech_s"] == pytest.approx((own["end_s"] - own["start_s"]).sum(), abs=1e-3)
    assert speech["dominant"] in EMOTIONS
    shares = [speech[f"share_{e}"] for e in EMOTIONS]
    assert sum(shares) == pytest.approx(1.0) and max(shares) == pytest.approx(speech["dominant_share"])
    silence = table.set_index("path").loc[str(corpus / "c_silence.wav")]
    assert silence["segments"] == 0 and pd.isna(silence["dominant"])


@pytest.mark.parametrize(
    ("label_format", "suffix", "marker"), [("audacity", ".txt", "\t"), ("textgrid", ".TextGrid", "IntervalTier")]
)
def test_label_files_per_recording(corpus, litert_model, tmp_path, label_format, suffix, marker):
    csv = tmp_path / "r.csv"
    sercli("annotate", corpus, "-o", csv, "--model", litert_model, code=3)
    sercli("export", csv, tmp_path / "labels", "--labels", label_format)
    written = sorted(p.relative_to(tmp_path / "labels").as_posix() for p in (tmp_path / "labels").rglob("*.*"))
    assert written == [f"a_speech{suffix}", f"nested/stereo{suffix}"]
    text = (tmp_path / "labels" / f"a_speech{suffix}").read_text()
    assert marker in text and any(e in text for e in EMOTIONS)


def test_existing_output_is_not_overwritten_without_asking(corpus, litert_model, tmp_path):
    out = tmp_path / "results.csv"
    out.write_text("precious")
    result = sercli("annotate", corpus / "a_speech.wav", "-o", out, "--model", litert_model, code=1)
    assert "exists" in result.stderr and out.read_text() == "precious"
    sercli("annotate", corpus / "a_speech.wav", "-o", out, "--model", litert_model, "--overwrite")
    assert len(read_results(out)) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/folder"], "does not exist"),
        (["{corpus}", "-o", "out.xlsx"], "unknown output format"),
        (["{corpus}", "--aggressiveness", "7"], "aggressiveness"),
        (["{corpus}", "--model", "/no/model.keras"], "not found"),
    ],
)
def test_bad_options_give_one_line_errors(corpus, tmp_path, args, message):
    result = sercli("annotate", *[a.format(corpus=corpus) for a in args], code=1, cwd=tmp_path)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_help_and_version_are_instant_and_do_not_import_tensorflow():
    code = "import sys; from sercli.cli import app; sys.argv=['sercli','--help']\ntry: app()\nexcept SystemExit: pass\nprint('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip().endswith("False")
    assert "annotate" in result.stdout
    assert sercli("--version").stdout.startswith("sercli ")


@pytest.mark.parametrize("output", ["-", "results.csv", "results.parquet"])
def test_writing_rows_imports_no_pandas(corpus, litert_model, tmp_path, output):
    """pandas' import is about half a second of a short run's start-up: CSV, on a stream or in a file, needs no
    table library, and Parquet only pyarrow."""
    target = output if output == "-" else str(tmp_path / output)
    code = (
        "import sys; from sercli.cli import main; "
        f"sys.argv = ['sercli', 'annotate', {str(corpus / 'a_speech.wav')!r}, '-o', {target!r}, '--model', {str(litert_model)!r}]"
        "\ntry: main()\nexcept SystemExit: pass\n"
        "print('pandas' in sys.modules, 'pyarrow' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stderr.splitlines()[-1] == ("False True" if output.endswith(".parquet") else "False False")
    if output.endswith(".parquet"):
        assert read_results(target)["path"].str.endswith("a_speech.wav").sum() == 3
    else:
        assert (result.stdout if output == "-" else Path(target).read_text()).count("a_speech.wav,") == 3


def test_csv_times_keep_the_millisecond_in_long_recordings(tmp_path):
    """Times of a 12-hour recording are written to the millisecond, on a stream and in a file alike; in
    Parquet, a segment without a label has null label and scores."""
    from sercli.pipeline import SegmentEmotion
    from sercli.writers import results_frame, segment_columns, write_csv, write_results

    probabilities = np.array([0.7095949, 0.123456, 1e-6, 0, 0, 0, 0, 0.1], np.float32)
    rows = [
        SegmentEmotion("long, named.wav", 1, 1234.5671, 43210.9876, "neutral", probabilities[0], probabilities),
        SegmentEmotion("quiet.wav", 0, 0.0, 2.0, None, np.nan, np.full(8, np.nan, np.float32)),
    ]
    stream = io.StringIO()
    write_csv(segment_columns(rows), stream)
    write_results(results_frame(rows), tmp_path / "r.csv")
    write_results(segment_columns(rows), tmp_path / "columns.csv")
    assert (tmp_path / "r.csv").read_text() == (tmp_path / "columns.csv").read_text() == stream.getvalue()
    write_results(segment_columns(rows), tmp_path / "columns.parquet")
    pd.testing.assert_frame_equal(read_results(tmp_path / "columns.parquet"), results_frame(rows))
    stored = pq.read_table(tmp_path / "columns.parquet")
    assert stored.column("label").null_count == stored.column("prob_sad").null_count == 1  # missing, not "None" or NaN
    lines = stream.getvalue().splitlines()
    assert lines[0] == ",".join(RESULT_COLUMNS)
    assert lines[1] == '"long, named.wav",1,1234.567,43210.988,neutral,0.70959,0.70959,0.12346,0,0,0,0,0,0.1'
    assert lines[2] == "quiet.wav,0,0,2,,,,,,,,,,"


def test_a_closed_stdout_ends_the_run_quietly(corpus, litert_model):
    """`sercli annotate ... -o - | head -2`: the reader leaving is a normal end in a pipe."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sercli", "annotate", corpus, "-o", "-", "--model", litert_model],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.readline()
    process.stdout.close()
    assert process.wait(60) in (0, 3, 141)  # 141: SIGPIPE's convention, when it was still writing
    stderr = process.stderr.read().decode()
    assert "error" not in stderr and "Traceback" not in stderr


def test_stderr_holds_messages_and_summary_only_and_a_complete_resume_says_so(corpus, litert_model, tmp_path):
    out = tmp_path / "results.csv"
    first = sercli("annotate", corpus, "-o", out, "--model", litert_model, code=3)
    assert first.stderr.startswith("skipped ") and first.stderr.splitlines()[-1].startswith("annotated 3 of 4 files")
    again = sercli(
        "annotate", corpus / "nested", corpus / "a_speech.wav", "-o", out, "--model", litert_model, "--resume"
    )
    assert again.stderr == f"nothing to do: all 2 recordings are already in {out}\n"


def test_label_exports_cover_the_recording_and_ask_before_replacing(corpus, litert_model, tmp_path):
    csv = tmp_path / "r.csv"
    sercli("annotate", corpus, "-o", csv, "--model", litert_model, code=3)
    sercli("export", csv, tmp_path / "labels", "--labels", "TextGrid")  # any case
    grid = (tmp_path / "labels" / "a_speech.TextGrid").read_text()
    length = sf.info(corpus / "a_speech.wav").duration
    assert f"xmax = {length:.3f}" in grid.splitlines()[4]  # the tier spans the audio, not the last segment
    refused = sercli("export", csv, tmp_path / "labels", "--labels", "textgrid", code=1)
    assert "exists" in refused.stderr and "--overwrite" in refused.stderr
    sercli("export", csv, tmp_path / "labels", "--labels", "textgrid", "--overwrite")
    wrong = sercli("export", csv, tmp_path / "lab.csv", "--labels", "audacity", code=1)
    assert "into a folder" in wrong.stderr and not (tmp_path / "lab.csv").exists()


def test_plot_draws_the_batch_and_each_recording(corpus, litert_model, tmp_path):
    csv = tmp_path / "r.csv"
    sercli("annotate", corpus, "-o", csv, "--model", litert_model, code=3)
    result = sercli("plot", csv, "-o", tmp_path / "plots")
    pictures = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pictures == ["0001-a_speech.png", "0002-c_silence.png", "0003-stereo.png", "batch.png"]
    assert all((tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pictures)
    assert "wrote 4 pictures" in result.stderr
    without_matplotlib = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sys; sys.modules['matplotlib'] = None; from sercli.cli import main; "
                "sys.argv = ['sercli', 'plot', sys.argv[1]]; main()"
            ),
            str(csv),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert without_matplotlib.returncode == 1 and "pip install 'sercli[plot]'" in without_matplotlib.stderr


@pytest.mark.parametrize("command", ["annotate", "export", "plot", "train", "evaluate", "models", "export-model"])
def test_help_reads_well_at_80_columns(command):
    text = sercli(command, "--help", env={**os.environ, "COLUMNS": "80"}).stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "<str>" not in text and "{" not in text.splitlines()[0]
    if command == "annotate":
        assert "Usage: python -m sercli annotate [OPTIONS] INPUTS..." in text
        assert "--checkpoint-every FLOAT" in text and ".tflite" in text and "--no-overwrite" not in text


def test_models_shows_whole_digests_at_80_columns(litert_model):
    text = sercli("models", "--model", litert_model, env={**os.environ, "COLUMNS": "80"}).stdout
    card = json.loads(litert_model.with_suffix(".json").read_text())
    cells = "".join(line.split("│")[2].strip() for line in text.splitlines() if line.count("│") == 3)
    assert card["sha256"] in cells and "…" not in text


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_results_file_sorts_recordings_by_path_across_checkpoints_and_resume(tmp_path, suffix):
    from sercli.batch import ResultsFile
    from sercli.files import recording_key
    from sercli.pipeline import FileOutcome, SegmentEmotion

    uniform = np.full(8, 0.125, np.float32)

    def outcome(name, segments, reverse=False):
        path = str(tmp_path / name)
        rows = [SegmentEmotion(path, k, float(k), k + 0.5, "calm", 0.125, uniform) for k in range(1, segments + 1)]
        return FileOutcome(tmp_path / name, rows[::-1] if reverse else rows, audio_s=10.0)

    out = tmp_path / f"results{suffix}"
    sink = ResultsFile(out, {"model": "m"}, resume=False)
    sink.add(outcome("c.wav", 2))
    sink.save()  # a checkpoint between recordings
    sink.add(outcome("a.wav", 3))
    sink.close()
    sink = ResultsFile(out, {"model": "m"}, resume=True)
    assert sink.done == {recording_key(tmp_path / "a.wav"), recording_key(tmp_path / "c.wav")}
    sink.add(outcome("b.wav", 2, reverse=True))  # rows out of time order are put in order too
    sink.close()
    table = read_results(out)
    assert [(Path(p).name, s) for p, s in zip(table["path"], table["segment"])] == [
        ("a.wav", 1),
        ("a.wav", 2),
        ("a.wav", 3),
        ("b.wav", 1),
        ("b.wav", 2),
        ("c.wav", 1),
        ("c.wav", 2),
    ]
