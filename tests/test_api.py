"""The Python API: one call for a folder, an Annotator for many calls and for signals in memory."""

import numpy as np
import pandas as pd
import soundfile as sf
from conftest import ESPEAK_RATE, speech_with_silences
from conftest import sercli as sercli_command

import sercli
from sercli.writers import RESULT_COLUMNS, read_results


def test_one_call_gives_the_table_annotate_writes(tmp_path, utterances, random_model):
    signal, _ = speech_with_silences(utterances)
    sf.write(tmp_path / "speech.wav", signal, ESPEAK_RATE)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    table = sercli.annotate(tmp_path, model=random_model.with_suffix(".tflite"))
    assert list(table.columns) == list(RESULT_COLUMNS) and len(table) == 3
    assert table.attrs["errors"] == {str(tmp_path / "broken.wav"): "Format not recognised."}
    # the same rows and dtypes as the command line's output file
    out = tmp_path / "cli.parquet"
    sercli_command("annotate", tmp_path / "speech.wav", "-o", out, "-m", random_model.with_suffix(".tflite"))
    pd.testing.assert_frame_equal(table, read_results(out), check_like=False)


def test_a_signal_in_memory_is_annotated_like_its_file(tmp_path, utterances, random_model):
    signal, _ = speech_with_silences(utterances)
    stereo = np.stack([signal, 0.5 * signal], axis=1)
    sf.write(tmp_path / "speech.wav", stereo, ESPEAK_RATE, subtype="FLOAT")
    annotator = sercli.Annotator(random_model.with_suffix(".tflite"))
    from_file = annotator.annotate(tmp_path / "speech.wav")
    from_memory = annotator.annotate_signal(stereo, ESPEAK_RATE, name=str(tmp_path / "speech.wav"))
    pd.testing.assert_frame_equal(from_memory, from_file)
    outcomes = list(annotator.iter_outcomes([tmp_path]))
    assert [o.path.name for o in outcomes] == ["speech.wav"] and len(outcomes[0].rows) == 3
