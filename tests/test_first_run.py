"""What a newcomer meets on a first run (issue 19): plots that read, warnings that say what a figure
is worth, progress at 80 columns, and the Python API writing outputs as the command does."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import sercli

import sercli as api
from sercli.writers import read_metadata, read_results


def test_a_timeline_ends_with_the_recording_and_labels_only_wide_segments(tmp_path, speech_16k, tflite_model):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from sercli.plots import recording_timeline

    path = tmp_path / "long.wav"
    sf.write(path, speech_16k, 16000)
    table = api.annotate(path, model=tflite_model)
    speech_s, length_s = len(speech_16k) / 16000, len(speech_16k) / 16000 + 600
    for end_s, labelled in ((speech_s, len(table)), (length_s, 0)):  # segments of 1-3 s in 10 s or in 10 minutes
        figure = recording_timeline(table, "x", length_s=end_s)
        top, bottom = figure.axes[:2]
        assert bottom.get_xlim()[1] == pytest.approx(end_s)
        assert len(top.texts) == labelled
        matplotlib.pyplot.close(figure)


def test_plot_closes_each_figure_and_the_confusion_chart_shows_ua(tmp_path, speech_16k, tflite_model):
    pytest.importorskip("matplotlib")
    for i in range(25):  # more than matplotlib's 20 open figures
        sf.write(tmp_path / f"r{i:02d}.wav", speech_16k, 16000)
    sercli("annotate", tmp_path, "-o", tmp_path / "r.csv", "-m", tflite_model)
    result = sercli("plot", tmp_path / "r.csv", "-o", tmp_path / "plots")
    assert "More than 20 figures" not in result.stderr and len(list((tmp_path / "plots").glob("*.png"))) == 26

    import matplotlib.pyplot as plt

    from sercli.plots import confusion_chart

    figure = confusion_chart([[9, 1], [3, 7]], ["calm", "angry"], "UA 0.800")
    (axes, _) = figure.axes
    colours = {text.get_text(): text.get_color() for text in axes.texts}
    assert colours["9"] == "white" and colours["1"] == "black"  # light text on dark cells
    assert [t.get_text() for t in axes.get_yticklabels()] == ["calm (90%)", "angry (70%)"]
    assert axes.get_title() == "UA 0.800"
    plt.close(figure)


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory, speech_16k):
    folder = tmp_path_factory.mktemp("speakers")
    rows = []
    for speaker in ("01", "02"):
        for i, label in enumerate(("angry", "sad", "calm")):
            name = f"{speaker}_{i}.wav"
            sf.write(folder / name, speech_16k * (0.3 + 0.2 * i), 16000)
            rows.append({"path": name, "label": label, "speaker": speaker})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def card_with_speakers(tflite_model, folder, speakers: list[str]):
    """A copy of ``model`` whose card says it was trained on ``speakers``."""
    copy = folder / "trained.tflite"
    copy.write_bytes(tflite_model.read_bytes())
    card = json.loads(tflite_model.with_suffix(".json").read_text())
    card["training"] = {**card.get("training", {}), "training_speakers": speakers}
    copy.with_suffix(".json").write_text(json.dumps(card))
    return copy


def test_evaluate_warns_when_test_speakers_trained_the_model(two_speakers, tflite_model, tmp_path):
    trained = card_with_speakers(tflite_model, tmp_path, ["1", "07"])  # actor numbers as the bundled card lists them
    result = sercli("evaluate", two_speakers / "labels.csv", "-m", trained)
    assert "warning: 1 of the 2 test speakers (01) trained the model" in result.stderr
    clean = sercli("evaluate", two_speakers / "labels.csv", "-m", tflite_model)
    assert "warning" not in clean.stderr and "95 % CI" in clean.stderr


def test_evaluate_gives_no_interval_for_one_speaker(two_speakers, tflite_model, tmp_path):
    table = pd.read_csv(two_speakers / "labels.csv", dtype=str)
    table[table["speaker"] == "01"].to_csv(two_speakers / "one.csv", index=False)
    result = sercli("evaluate", two_speakers / "one.csv", "-m", tflite_model)
    assert "warning: every clip is of one speaker" in result.stderr
    assert "95 % CI" not in result.stderr and "one speaker: no interval" in result.stderr
    metrics = json.loads(sercli("evaluate", two_speakers / "one.csv", "-m", tflite_model, "--json").stdout)
    assert metrics["ua_ci95"] is None and len(metrics["warnings"]) == 1


def test_progress_fits_80_columns(tmp_path, speech_16k, tflite_model):
    """The progress line, as a terminal shows it: file count and elapsed time are never cut."""
    script = (
        "import sys, time; from rich.console import Console; import sercli.cli as cli; "
        "cli.console = Console(stderr=True, force_terminal=True, width=80, record=True); "
        "p = cli.AnnotationProgress(False); p.__enter__(); p.start(12345); "
        "[p.outcome(type('O', (), {'error': None, 'note': None, 'audio_s': 3600.0, 'path': 'x'})()) for _ in range(99)]; "
        "p.progress.refresh(); text = cli.console.export_text(); p.__exit__(None, None, None); print(repr(text))"
    )
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "99/12345 files" in shown and "0:00:0" in shown and "…" not in shown


def test_iter_outcomes_reports_a_missing_path_and_goes_on(tmp_path, speech_16k, tflite_model):
    sf.write(tmp_path / "a.wav", speech_16k, 16000)
    outcomes = list(api.Annotator(tflite_model).iter_outcomes([tmp_path / "missing.wav", tmp_path / "a.wav"]))
    assert [(o.path.name, o.error) for o in outcomes] == [("missing.wav", "file not found"), ("a.wav", None)]


def test_the_python_api_writes_checkpointed_resumable_outputs(tmp_path, speech_16k, tflite_model):
    for i in range(4):
        sf.write(tmp_path / f"r{i}.wav", speech_16k, 16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    out = tmp_path / "out" / "results.parquet"
    out.parent.mkdir()
    table = api.annotate(tmp_path, output=out, model=tflite_model)
    assert table.attrs["errors"] == {str(tmp_path / "broken.wav"): "Format not recognised."}
    assert read_metadata(out)["model"]["sha256"] and len(table["path"].unique()) == 4
    assert pd.read_csv(out.with_name("results.parquet.errors.csv"))["path"].tolist() == [str(tmp_path / "broken.wav")]
    assert not list(out.parent.glob(".*.lock")), "the lock goes with the run"
    with pytest.raises(ValueError, match="exists: pass --overwrite"):
        api.annotate(tmp_path, output=out, model=tflite_model)
    sf.write(tmp_path / "r4.wav", speech_16k, 16000)
    resumed = api.annotate(tmp_path, output=out, model=tflite_model, resume=True)
    assert len(resumed["path"].unique()) == 5
    pd.testing.assert_frame_equal(resumed[resumed["path"] != str(tmp_path / "r4.wav")], table)
    with pytest.raises(ValueError, match="checkpoint_s: give output"):
        api.annotate(tmp_path, model=tflite_model, checkpoint_s=1.0)
    assert read_results(out).equals(resumed)


def test_the_readme_fits_a_screen_or_two_and_tells_no_history():
    root = Path(__file__).parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for story in ("earlier session", "this session", "previous code", "the code of the last"):
        assert story not in text
    for doc in ("docs/benchmarks.md", "docs/robustness.md", "docs/training.md", "docs/bad-input.md"):
        assert doc in text and (root / doc).exists()
