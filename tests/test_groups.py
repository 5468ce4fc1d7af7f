"""Normalisation groups: the auto plan, speakers from a table or a pattern, resumed groups, workers and metadata."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import ESPEAK_RATE, sercli, speech_with_silences

from sercli.datasets import LabelledClip
from sercli.evaluation import normalization_groups
from sercli.files import recording_key
from sercli.groups import (
    AUTO_OWN_GROUP_S,
    plan_groups,
    speaker_from_pattern,
    speaker_source,
    speakers_from_table,
)
from sercli.model import load_classifier
from sercli.normalization import FrameStats, standardize
from sercli.pipeline import InMemoryRecording, annotate_files
from sercli.vad import VadConfig


def names(groups):
    return {g.name: [Path(m.source).name for m in g.members] for g in groups}


def test_auto_gives_long_recordings_their_own_group_and_pools_short_ones_by_folder():
    paths = [Path("calls/a.wav"), Path("clips/1.wav"), Path("calls/b.wav"), Path("clips/2.wav"), Path("x/3.wav")]
    lengths = {"a.wav": 600.0, "b.wav": AUTO_OWN_GROUP_S, "1.wav": 3.0, "2.wav": 2.5, "3.wav": 19.9}
    groups = plan_groups(paths, "auto", duration_of=lambda p: lengths[Path(p).name])
    assert names(groups) == {
        "recording calls/a.wav": ["a.wav"],
        "folder clips": ["1.wav", "2.wav"],
        "recording calls/b.wav": ["b.wav"],
        "folder x": ["3.wav"],
    }
    # an in-memory signal is always its own group, whatever its length
    signal = InMemoryRecording("signal", np.zeros(16000), 16000)
    assert [g.name for g in plan_groups([signal], "auto")] == ["recording signal"]


def test_other_modes_group_by_what_they_name():
    paths = [Path("a/1.wav"), Path("b/2.wav"), Path("a/3.wav")]
    short = lambda _: 1.0
    assert names(plan_groups(paths, "folder", duration_of=short)) == {
        "folder a": ["1.wav", "3.wav"],
        "folder b": ["2.wav"],
    }
    for mode in ("recording", "segment", "none"):
        assert [g.name for g in plan_groups(paths, mode, duration_of=short)] == [f"recording {p}" for p in paths]


def test_speakers_group_across_folders_and_unknown_speakers_fall_back_to_auto(tmp_path):
    paths = [Path("day1/ann_1.wav"), Path("day2/ann_2.wav"), Path("day1/bob_1.wav"), Path("day1/noise.wav")]
    speaker_of = speaker_from_pattern(r"^(?P<speaker>[a-z]+)_")
    for mode in ("auto", "speaker"):
        groups = plan_groups(paths, mode, speaker_of, duration_of=lambda _: 3.0)
        assert names(groups) == {
            "speaker ann": ["ann_1.wav", "ann_2.wav"],
            "speaker bob": ["bob_1.wav"],
            "folder day1": ["noise.wav"],
        }
    # speakers do not change the recording and folder modes
    assert len(plan_groups(paths, "recording", speaker_of, duration_of=lambda _: 3.0)) == 4


def test_speakers_table_matches_recordings_by_their_real_path(tmp_path):
    (tmp_path / "audio").mkdir()
    table = tmp_path / "speakers.csv"
    pd.DataFrame({"path": ["audio/a.wav", str(tmp_path / "audio" / "b.wav")], "speaker": ["s1", "s2"]}).to_csv(
        table, index=False
    )
    speaker_of = speakers_from_table(table)
    assert speaker_of(tmp_path / "audio" / "a.wav") == "s1"
    assert speaker_of(tmp_path / "audio" / ".." / "audio" / "b.wav") == "s2"
    assert speaker_of(tmp_path / "audio" / "c.wav") is None


@pytest.mark.parametrize(
    ("table", "pattern", "message"),
    [
        ("missing.csv", None, r"speakers table .*missing.csv not found"),
        ("bad.csv", None, "missing column 'speaker'"),
        ("empty.csv", None, "row 2: empty speaker"),
        (None, "(", "is not a regular expression"),
        (None, "^(.+)_", "has no group named speaker"),
        ("bad.csv", "(?P<speaker>.)", "not both"),
    ],
)
def test_speaker_sources_refuse_what_they_cannot_use_in_one_line(tmp_path, table, pattern, message):
    (tmp_path / "bad.csv").write_text("path,who\na.wav,x\n")
    (tmp_path / "empty.csv").write_text("path,speaker\na.wav,x\nb.wav,\n")
    with pytest.raises(ValueError, match=message) as error:
        speaker_source(table and tmp_path / table, pattern)
    assert "\n" not in str(error.value)


def test_done_recordings_only_lend_their_statistics():
    paths = [Path("a/1.wav"), Path("a/2.wav"), Path("b/3.wav")]
    done = {recording_key(paths[0]), recording_key(paths[2])}
    groups = plan_groups(paths, "folder", done=done, duration_of=lambda _: 1.0)
    assert [g.name for g in groups] == ["folder a"]  # folder b has nothing left to do
    assert [(Path(m.source).name, m.stats_only) for m in groups[0].members] == [("1.wav", True), ("2.wav", False)]


@pytest.fixture(scope="module")
def clips_folder(tmp_path_factory, utterances):
    """Short clips in two folders (one loud), and one long recording beside them."""
    root = tmp_path_factory.mktemp("groups")
    for folder, gain in (("quiet", 0.2), ("loud", 1.0)):
        (root / folder).mkdir()
        for i, utterance in enumerate(utterances[:3]):
            signal, _ = speech_with_silences([utterance])
            sf.write(root / folder / f"spk{i % 2}_{i}.wav", gain * signal, ESPEAK_RATE)
    long_signal, _ = speech_with_silences(utterances * 3, silence_s=1.0)
    assert len(long_signal) / ESPEAK_RATE >= AUTO_OWN_GROUP_S
    sf.write(root / "loud" / "long.wav", long_signal, ESPEAK_RATE)
    return root


@pytest.fixture(scope="module")
def classifier(normalized_model):
    return load_classifier(normalized_model)


def rows_of(outcomes):
    return {(r.path, r.segment): r.probabilities for o in outcomes for r in o.rows}


def test_a_group_is_standardised_over_all_its_speech_plus_the_prior(clips_folder, classifier):
    from sercli.audio import read_audio
    from sercli.pipeline import segment_windows

    paths = sorted((clips_folder / "quiet").glob("*.wav"))
    outcomes = list(annotate_files(paths, classifier, VadConfig()))  # auto: three short clips, one group
    assert {o.group for o in outcomes} == {f"folder {clips_folder / 'quiet'}"}
    features = classifier.card.feature_config
    parts = [list(segment_windows([read_audio(p, 16000)], features, VadConfig())) for p in paths]
    stats = sum((s for segments in parts for _, _, s, _ in segments), FrameStats.empty(features.n_mfcc))
    assert classifier.card.prior.count == 1000
    for outcome, segments in zip(outcomes, parts):
        for row, (_, windows, _, _) in zip(outcome.rows, segments):
            expected = classifier.predict_proba(standardize(windows, stats + classifier.card.prior)).mean(axis=0)
            assert np.allclose(row.probabilities, expected, atol=2e-5)


@pytest.mark.parametrize("mode", ["auto", "segment", "none"])
def test_a_headed_model_fuses_each_segment_with_its_groups_functionals(clips_folder, headed_model, mode):
    from sercli.audio import read_audio
    from sercli.fusion import fuse
    from sercli.pipeline import segment_windows

    headed = load_classifier(headed_model)
    if mode == "none":  # the head alone standardises over no group; the network reads raw MFCCs
        headed.card.normalization = "none"
    paths = sorted((clips_folder / "quiet").glob("*.wav"))
    outcomes = list(annotate_files(paths, headed, VadConfig(), normalization=mode))
    features, head, prior = headed.card.feature_config, headed.card.head, headed.card.prior
    parts = [list(segment_windows([read_audio(p, 16000)], features, VadConfig(), functionals=True)) for p in paths]
    stats = sum((s for segments in parts for _, _, s, _ in segments), FrameStats.empty(features.n_mfcc))
    values = np.array([f for segments in parts for _, _, _, f in segments])
    group = FrameStats.of(values)
    changed = 0
    for outcome, segments in zip(outcomes, parts):
        assert len(outcome.rows) == len(segments)
        for row, (_, windows, segment_stats, functionals) in zip(outcome.rows, segments):
            if mode == "auto":  # the folder's three clips are one group, for the MFCCs and the functionals
                network, scores = standardize(windows, stats + prior), head.log_probabilities(functionals[None], group)
            elif mode == "segment":
                alone = FrameStats.of(functionals[None])
                network = standardize(windows, segment_stats + prior)
                scores = head.log_probabilities(functionals[None], alone)
            else:
                network = windows
                scores = head.log_probabilities(functionals[None], FrameStats.empty(len(functionals)))
            cnn = headed.predict_proba(network).mean(axis=0)
            # the fixture's head has temperature 2: the fused log-probabilities are halved
            fused = fuse(cnn[None], scores, head.weight, head.temperature)[0]
            assert head.temperature == 2.0 and np.allclose(row.probabilities, fused, atol=2e-5)
            assert row.label == headed.card.labels[int(row.probabilities.argmax())]
            changed += not np.allclose(row.probabilities, cnn, atol=1e-3)
    assert changed  # the head moved the probabilities


def test_a_headed_model_annotates_the_same_rows_with_workers(clips_folder, headed_model, tmp_path):
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"headed-{workers}.csv"
        sercli("annotate", clips_folder, "-o", out, "--model", headed_model, "--workers", workers, "-q")
        outputs.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(outputs[0], outputs[1], atol=1e-5)


@pytest.mark.parametrize("model", ["normalized_model", "headed_model"])
def test_a_resumed_group_gives_the_rows_of_an_uninterrupted_run(clips_folder, model, request):
    classifier = load_classifier(request.getfixturevalue(model))
    paths = sorted(clips_folder.rglob("*.wav"))
    whole = rows_of(annotate_files(paths, classifier, VadConfig()))
    done = {recording_key(p) for p in paths[::2]}
    rest = list(annotate_files(paths, classifier, VadConfig(), done=done))
    assert sorted(o.path for o in rest) == sorted(p for p in paths if recording_key(p) not in done)
    resumed = rows_of(rest)
    assert resumed and all(np.allclose(whole[key], value, atol=1e-6) for key, value in resumed.items())


@pytest.mark.parametrize("mode", ["auto", "folder"])
def test_workers_and_one_process_give_the_same_rows_and_groups(clips_folder, normalized_model, tmp_path, mode):
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"{mode}-{workers}.csv"
        sercli("annotate", clips_folder, "-o", out, "--model", normalized_model, "--normalize", mode,
               "--workers", workers, "-q")  # fmt: skip
        outputs[workers] = (pd.read_csv(out), json.loads(out.with_name(out.name + ".meta.json").read_text()))
    pd.testing.assert_frame_equal(outputs[1][0], outputs[2][0], atol=1e-5)
    groups = outputs[1][1]["groups"]
    assert groups == outputs[2][1]["groups"] and len(groups) == 7
    if mode == "auto":
        assert groups[str(clips_folder / "loud" / "long.wav")] == f"recording {clips_folder / 'loud' / 'long.wav'}"
        assert groups[str(clips_folder / "loud" / "spk0_0.wav")] == f"folder {clips_folder / 'loud'}"


def test_speaker_pattern_pools_a_speaker_across_folders(clips_folder, normalized_model, tmp_path):
    out = tmp_path / "speakers.csv"
    sercli("annotate", clips_folder, "-o", out, "--model", normalized_model, "--speaker-pattern",
           r"^(?P<speaker>spk\d)_", "-q")  # fmt: skip
    groups = json.loads(out.with_name(out.name + ".meta.json").read_text())["groups"]
    assert groups[str(clips_folder / "quiet" / "spk0_0.wav")] == groups[str(clips_folder / "loud" / "spk0_2.wav")]
    assert groups[str(clips_folder / "quiet" / "spk1_1.wav")] == "speaker spk1"
    result = sercli("annotate", clips_folder, "--model", normalized_model, "--normalize", "speaker", code=1)
    assert "needs the speakers" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_evaluation_groups_clips_as_annotate_groups_their_recordings(tmp_path):
    clips = [
        LabelledClip(tmp_path / "a" / "1.wav", "happy", "s1"),
        LabelledClip(tmp_path / "b" / "2.wav", "sad", "s1"),
        LabelledClip(tmp_path / "a" / "3.wav", "sad"),
        LabelledClip(tmp_path / "a" / "4.wav", "sad"),
    ]
    for clip in clips:
        clip.path.parent.mkdir(exist_ok=True)
        sf.write(clip.path, np.zeros(16000), 16000)
    auto = normalization_groups(clips, "auto")
    assert auto[0] == auto[1] == "speaker s1" and auto[2] == auto[3] == f"folder {tmp_path / 'a'}"
    assert list(normalization_groups(clips, "recording")) == [0, 1, 2, 3]
    pattern = speaker_from_pattern(r"^(?P<speaker>[0-9])")
    assert len(set(normalization_groups(clips, "auto", pattern))) == 4
