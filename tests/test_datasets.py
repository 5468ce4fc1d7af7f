"""Labelled data: corpus layouts, the labels table and its errors, speaker folds, bootstrap intervals."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sercli.datasets import (
    CORPORA,
    LAYOUTS,
    DatasetError,
    LabelledClip,
    balanced_weights,
    find_clips,
    fold_split,
    label_order,
    load_clips,
    read_labels_table,
    speaker_folds,
    validation_speakers,
    write_labels_table,
)
from sercli.evaluation import bootstrap_ua_interval, read_clip

RATE = 16000


@pytest.mark.parametrize(
    ("layout", "name", "expected"),
    [
        ("ravdess", "03-01-06-01-02-01-12.wav", ("fearful", "12")),
        ("crema-d", "1001_DFA_ANG_XX.wav", ("angry", "1001")),
        ("crema-d", "1091_TSI_NEU_HI.wav", ("neutral", "1091")),
        ("tess", "OAF_back_angry.wav", ("angry", "OAF")),
        ("tess", "YAF_bath_ps.wav", ("surprised", "YAF")),
        ("tess", "OAF_beg_fear.wav", ("fearful", "OAF")),
        ("savee", "DC_a01.wav", ("angry", "DC")),
        ("savee", "KL_sa15.wav", ("sad", "KL")),
        ("savee", "JE_su03.wav", ("surprised", "JE")),
        ("emodb", "03a01Fa.wav", ("happy", "03")),
        ("emodb", "16b10Lb.wav", ("bored", "16")),
        ("emodb", "08a02Wc.wav", ("angry", "08")),
    ],
)
def test_layouts_read_label_and_speaker_from_names(layout, name, expected):
    assert LAYOUTS[layout].parse(Path("corpus") / name) == expected


@pytest.mark.parametrize(
    ("layout", "name"),
    [
        ("ravdess", "03-01-09-01-02-01-12.wav"),
        ("ravdess", "01-01-06-01-02-01-12.wav"),
        ("crema-d", "1001_DFA_XYZ_XX.wav"),
        ("tess", "OAF_back_bored.wav"),
        ("savee", "DC_x01.wav"),
        ("emodb", "03a01Xa.wav"),
        ("emodb", "1001_DFA_ANG_XX.wav"),
    ],
)
def test_layouts_refuse_names_that_do_not_fit(layout, name):
    with pytest.raises(ValueError, match=f"{name} is not named like"):
        LAYOUTS[layout].parse(Path(name))


def write_tone(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), RATE)
    return path


@pytest.mark.parametrize(
    ("layout", "names"),
    [
        ("crema-d", ["1001_DFA_ANG_XX.wav", "1002_IEO_SAD_LO.wav", "1002_IEO_HAP_MD.wav"]),
        ("tess", ["OAF_back_angry.wav", "YAF_dog_sad.wav", "YAF_dog_happy.wav"]),
        ("savee", ["DC_a01.wav", "JE_sa02.wav", "JE_h02.wav"]),
        ("emodb", ["03a01Wa.wav", "08a02Ta.wav", "08a02Fb.wav"]),
    ],
)
def test_a_corpus_folder_is_read_with_its_layout_found_from_the_names(tmp_path, layout, names):
    for name in names:
        write_tone(tmp_path / "corpus" / "sub" / name)
    clips, description = load_clips(tmp_path / "corpus")
    assert sorted(c.label for c in clips) == ["angry", "happy", "sad"]
    assert len({c.speaker for c in clips}) == 2 and all(c.split is None for c in clips)
    assert description == CORPORA[layout]
    write_tone(tmp_path / "corpus" / "README.wav")  # with the layout named, a stray file is skipped
    assert find_clips(tmp_path / "corpus", layout) == clips


def test_one_folder_per_label(tmp_path):
    for label in ("calm", "tense"):
        for i in range(2):
            write_tone(tmp_path / "corpus" / label / f"{i}.wav")
    clips = find_clips(tmp_path / "corpus", "folders")
    assert [(c.label, c.speaker) for c in clips] == [("calm", None)] * 2 + [("tense", None)] * 2
    # without speakers, each recording is its own group for splits and normalisation
    assert len({c.group for c in clips}) == 4


def test_a_folder_of_unknown_names_asks_for_the_layout(tmp_path):
    for name in ("a.wav", "b.wav", "03a01Wa.wav"):
        write_tone(tmp_path / name)
    with pytest.raises(DatasetError, match="cannot tell the layout .* pass --layout"):
        find_clips(tmp_path)
    with pytest.raises(DatasetError, match="unknown layout 'iemocap'"):
        find_clips(tmp_path, "iemocap")


@pytest.fixture
def table_folder(tmp_path):
    write_tone(tmp_path / "audio" / "a.wav")
    write_tone(tmp_path / "audio" / "long.flac", seconds=3.0)
    return tmp_path


def write_table(folder: Path, rows: list[dict], name: str = "labels.csv") -> Path:
    path = folder / name
    frame = pd.DataFrame(rows)
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return path


def test_a_labels_table_gives_paths_from_its_folder_parts_speakers_and_splits(table_folder):
    rows = [
        {"path": "audio/a.wav", "label": "calm", "speaker": "s1", "start_s": None, "end_s": None, "split": "train"},
        {"path": "audio/long.flac", "label": "tense", "speaker": "s2", "start_s": 0.5, "end_s": 1.5, "split": "TEST"},
        {"path": "audio/long.flac", "label": "calm", "speaker": "s2", "start_s": 2.0, "end_s": 3.0, "split": "test"},
    ]
    for name in ("labels.csv", "labels.parquet"):
        clips = read_labels_table(write_table(table_folder, rows, name))
        assert clips[0] == LabelledClip(table_folder / "audio" / "a.wav", "calm", "s1", None, None, "train")
        assert (clips[1].start_s, clips[1].end_s, clips[1].split) == (0.5, 1.5, "test")
    part = read_clip(clips[1], RATE)
    assert len(part) == RATE  # 1.5 s - 0.5 s at 16 kHz


def test_only_path_and_label_are_required(table_folder):
    clips = read_labels_table(write_table(table_folder, [{"path": "audio/a.wav", "label": "calm"}]))
    assert clips == [LabelledClip(table_folder / "audio" / "a.wav", "calm")]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"path": "audio/a.wav", "label": "calm", "mood": "x"}], "unknown column 'mood'"),
        ([{"path": "audio/a.wav"}], "missing column 'label'"),
        ([{"path": "audio/missing.wav", "label": "calm"}], r"row 1: recording .*missing.wav not found"),
        ([{"path": "audio/a.wav", "label": ""}], "row 1: empty label"),
        ([{"path": "audio/a.wav", "label": "calm", "start_s": 1.0, "end_s": None}], "both start_s and end_s"),
        ([{"path": "audio/a.wav", "label": "calm", "start_s": 2.0, "end_s": 1.0}], "do not make an interval"),
        ([{"path": "audio/a.wav", "label": "calm", "start_s": "soon", "end_s": 1.0}], "'soon' is not a number"),
        ([{"path": "audio/a.wav", "label": "calm", "split": "dev"}], "split 'dev' is not one of"),
        (
            [
                {"path": "audio/a.wav", "label": "calm", "speaker": "ann", "split": "train"},
                {"path": "audio/long.flac", "label": "tense", "speaker": "ann", "split": "test"},
            ],
            "speaker 'ann' is in both the train and the test split",
        ),
    ],
)
def test_table_errors_are_one_line_naming_the_table(table_folder, rows, message):
    with pytest.raises(DatasetError, match=message) as error:
        read_labels_table(write_table(table_folder, rows))
    assert "labels.csv" in str(error.value) and "\n" not in str(error.value)


def test_written_tables_read_back_the_same_clips(table_folder, tmp_path):
    clips = [
        LabelledClip(table_folder / "audio" / "a.wav", "calm", "s1"),
        LabelledClip(table_folder / "audio" / "long.flac", "tense", "s2", 0.5, 1.5),
    ]
    out = tmp_path / "tables" / "labels.csv"
    out.parent.mkdir()
    write_labels_table(clips, out)
    assert "../audio/a.wav" in out.read_text()  # relative to the table, so the folder can move
    assert read_labels_table(out) == clips


def test_a_folder_of_symbolic_links_keeps_the_names_the_user_gave(table_folder, tmp_path):
    corpus = tmp_path / "corpus" / "calm"
    corpus.mkdir(parents=True)
    (corpus / "clip.wav").symlink_to(table_folder / "audio" / "a.wav")  # a curated folder of links
    out = tmp_path / "corpus" / "labels.csv"
    write_labels_table([LabelledClip(corpus / "clip.wav", "calm")], out)
    assert pd.read_csv(out)["path"].tolist() == ["calm/clip.wav"]
    assert read_labels_table(out)[0].path == corpus / "clip.wav"


def test_label_order_puts_ravdess_emotions_first_in_their_order():
    assert label_order({"sad", "bored", "angry", "neutral", "anxious"}) == [
        "neutral",
        "sad",
        "angry",
        "anxious",
        "bored",
    ]


def test_speaker_folds_and_validation_speakers():
    folds = speaker_folds(["s10", "s2", "s1", "s3"], 2)
    assert folds == [["s1", "s2"], ["s3", "s10"]]  # natural order: s2 before s10
    assert validation_speakers(["s1", "s2", "s3", "s10"]) == ["s3", "s10"]
    assert validation_speakers(["s1", "s2", "s3"]) == ["s3"]  # two stay to train on
    assert validation_speakers(["s1"]) == []
    with pytest.raises(DatasetError, match="cannot make 3 folds from 2 speakers"):
        speaker_folds(["a", "b"], 3)


def test_fold_split_stops_early_on_speakers_of_every_corpus_outside_the_test_fold():
    clips = [LabelledClip(Path(f"{s}.wav"), "sad", speaker=s, corpus="ravdess") for s in ["01", "02", "03", "04", "05"]]
    clips += [LabelledClip(Path(f"{s}.wav"), "sad", speaker=s, corpus="nemo") for s in ["A0", "B0", "C0"]]
    train, validation = fold_split(clips, ["01", "05", "A0"])
    assert validation == ["04", "C0"]  # the last of each corpus's rest (three and two speakers)
    assert train == ["02", "03", "B0"]


def test_balanced_weights_weigh_corpora_alike_and_labels_alike_within_each():
    big = [LabelledClip(Path(f"b{i}.wav"), "angry" if i < 60 else "sad", corpus="nemo") for i in range(80)]
    small = [LabelledClip(Path(f"s{i}.wav"), ["neutral", "calm", "sad"][i % 3], corpus="ravdess") for i in range(30)]
    clips = big + small
    weights = balanced_weights(clips)
    assert weights.shape == (110,) and np.isclose(weights.mean(), 1.0)
    assert np.isclose(weights[:80].sum(), weights[80:].sum())  # 80 clips weigh what 30 do
    labels = np.array([c.label for c in clips])
    assert np.isclose(weights[:80][labels[:80] == "angry"].sum(), weights[:80][labels[:80] == "sad"].sum())
    assert np.allclose([weights[80:][labels[80:] == label].sum() for label in ("neutral", "calm", "sad")], 55 / 3)
    assert np.allclose(balanced_weights(small), 1.0)  # one corpus, labels alike: every clip 1


def test_bootstrap_interval_holds_the_estimate_and_widens_when_speakers_differ():
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(10), 40)
    true = rng.integers(0, 4, len(speakers))
    # half of the speakers are labelled well, half badly: clips of a speaker are not independent
    right = rng.random(len(true)) < np.where(speakers < 5, 0.9, 0.3)
    predicted = np.where(right, true, (true + 1) % 4)
    ua = np.mean([np.mean(predicted[true == c] == c) for c in range(4)])
    by_clip = bootstrap_ua_interval(true, predicted)
    by_speaker = bootstrap_ua_interval(true, predicted, speakers)
    assert by_clip[0] < ua < by_clip[1] and by_speaker[0] < ua < by_speaker[1]
    assert by_speaker[1] - by_speaker[0] > 1.5 * (by_clip[1] - by_clip[0])
    assert bootstrap_ua_interval(true, predicted, speakers) == by_speaker  # seeded


def test_results_tables_carry_a_probability_column_per_model_label(tmp_path):
    from sercli.batch import OutputError, ResultsFile
    from sercli.pipeline import SegmentEmotion
    from sercli.writers import read_results, results_frame, table_labels, write_results

    labels = ["calm", "tense", "very tense"]
    row = SegmentEmotion("a.wav", 0, 0.0, 1.0, "tense", 0.7, np.array([0.2, 0.7, 0.1], np.float32))
    out = tmp_path / "rows.csv"
    write_results(results_frame([row], labels), out)
    table = read_results(out)
    assert table_labels(table) == labels and table["prob_very tense"].tolist() == pytest.approx([0.1])
    with pytest.raises(OutputError, match="columns of other labels"):
        ResultsFile(out, {}, resume=True, labels=["calm", "tense"])
