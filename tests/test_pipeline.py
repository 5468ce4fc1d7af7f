"""The in-process pipeline: decoding, window cutting and inference overlap, and nothing leaks between files."""

import numpy as np
import soundfile as sf
from conftest import ESPEAK_RATE, speech_with_silences

from sercli.model import load_classifier
from sercli.pipeline import annotate_files
from sercli.vad import VadConfig


def test_batching_across_recordings_gives_each_the_rows_it_gets_alone(random_model, tmp_path, utterances):
    signal, _ = speech_with_silences(utterances, silence_s=0.8)
    paths = []
    for i in range(6):  # different lengths, so batches of windows straddle recordings
        paths.append(tmp_path / f"rec_{i}.wav")
        sf.write(paths[-1], signal[: len(signal) * (i + 4) // 10], ESPEAK_RATE)
    paths.insert(3, tmp_path / "missing.wav")
    classifier = load_classifier(random_model.with_suffix(".tflite"), threads=2)
    together = list(annotate_files(paths, classifier, VadConfig()))
    assert [o.path for o in together] == paths
    assert [o.error for o in together].count(None) == 6 and "not found" in together[3].error
    for outcome in together:
        (alone,) = annotate_files([outcome.path], classifier, VadConfig())
        assert [(r.segment, r.start_s, r.end_s, r.label) for r in outcome.rows] == [
            (r.segment, r.start_s, r.end_s, r.label) for r in alone.rows
        ]
        for row, single in zip(outcome.rows, alone.rows):
            np.testing.assert_allclose(row.probabilities, single.probabilities, atol=1e-6)
        assert outcome.audio_s == alone.audio_s
    assert abs(together[-1].audio_s - len(signal) * 9 // 10 / ESPEAK_RATE) < 1e-3


def test_a_consumer_that_stops_early_leaves_no_thread_behind(random_model, tmp_path, utterances):
    import threading

    signal, _ = speech_with_silences(utterances)
    paths = [tmp_path / f"rec_{i}.wav" for i in range(20)]
    for path in paths:
        sf.write(path, signal, ESPEAK_RATE)
    before = threading.active_count()
    outcomes = annotate_files(paths, load_classifier(random_model.with_suffix(".tflite"), threads=1), VadConfig())
    next(outcomes)
    outcomes.close()
    for thread in threading.enumerate():
        if thread.name.startswith(("decode", "inference")):
            thread.join(timeout=5)
    assert threading.active_count() <= before
