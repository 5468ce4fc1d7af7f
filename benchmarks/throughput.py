"""Speed and memory of `sercli annotate`, printed as ratios to real time and to a feature-only floor.

    python benchmarks/throughput.py [--model PATH] [--minutes 120] [--long-hours 1 10] [--workers 1 2]

Builds a corpus in a temporary folder from the project's own `sample_audio/` recordings (speech
joined with silences): short files of 5-20 s as 16 kHz WAV and 44.1 kHz FLAC, plus 10-minute files.
Measures, each in a fresh process:

- floor: decode + resample + MFCC of every sample (no VAD, no model), in this process, one thread;
- throughput: the whole `sercli annotate CORPUS -o out.parquet` (median of --repeat runs) for each
  --workers value, and on a local Dask cluster of 2 workers writing a partitioned Parquet dataset
  (when dask is installed);
- start-up: annotating one 3 s file, whole process, median of 5 runs;
- memory: peak RSS annotating one file of each --long-hours length.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from threadpoolctl import threadpool_limits

from sercli.audio import iter_audio, read_audio
from sercli.features import mfcc

RATE = 16000
SAMPLES = Path(__file__).resolve().parent.parent / "sample_audio"


def speech_source() -> np.ndarray:
    """The demo recordings at 16 kHz, one after another (about 40 s, half of it speech)."""
    return np.concatenate([read_audio(path) for path in sorted(SAMPLES.iterdir())])


def make_corpus(folder: Path, minutes: float, source: np.ndarray, rng: np.random.Generator) -> float:
    """Short and 10-minute files totalling about ``minutes``; returns the audio length in seconds."""
    total = 0.0
    for i in range(int(minutes * 60 * 0.4 / 12)):  # 40 % of the audio in 5-20 s files
        length = int(rng.uniform(5, 20) * RATE)
        start = rng.integers(0, len(source) - length)
        piece = source[start : start + length]
        if i % 2:
            sf.write(folder / f"short_{i:03d}.flac", soxr.resample(piece, RATE, 44100), 44100)
        else:
            sf.write(folder / f"short_{i:03d}.wav", piece, RATE)
        total += length / RATE
    for i in range(max(1, round(minutes * 0.6 / 10))):  # 60 % in 10-minute files
        total += write_long(folder / f"long_{i}.flac", 600, source)
    return total


def write_long(path: Path, seconds: float, source: np.ndarray) -> float:
    """A FLAC file of ``seconds`` of the source repeated, written block by block."""
    with sf.SoundFile(path, "w", RATE, 1, format="FLAC") as handle:
        left = int(seconds * RATE)
        while left > 0:
            handle.write(source[:left])
            left -= min(left, len(source))
    return seconds


def floor_seconds(folder: Path) -> float:
    """Wall time to decode, resample and compute MFCCs of every file."""
    started = time.perf_counter()
    with threadpool_limits(limits=1):
        for path in sorted(folder.iterdir()):
            for block in iter_audio(path):
                mfcc(block)
    return time.perf_counter() - started


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command run in a fresh measuring process."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True)
    wall, rss = map(float, out.stdout.split())
    return wall, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model to benchmark (default: the bundled LiteRT model)")
    parser.add_argument("--minutes", type=float, default=120.0, help="corpus length")
    parser.add_argument("--long-hours", type=float, nargs="*", default=[1.0, 10.0], help="memory test lengths")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each throughput measure")
    args = parser.parse_args()
    sercli = [sys.executable, "-m", "sercli", "annotate", "-q", *(["--model", args.model] if args.model else [])]
    rng = np.random.default_rng(0)
    source = speech_source()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        corpus.mkdir()
        audio_s = make_corpus(corpus, args.minutes, source, rng)
        files = len(list(corpus.iterdir()))
        floor = floor_seconds(corpus)
        print(f"corpus: {files} files, {audio_s / 60:.1f} min of audio (short WAV/FLAC + 10-min FLAC)")
        print(f"floor (decode + resample + MFCC only): {floor:.2f} s = {audio_s / floor:.0f}x real time")
        runs = {f"--workers {n}": ["-o", str(tmp / f"out_{n}.parquet"), "--workers", str(n)] for n in args.workers}
        if importlib.util.find_spec("distributed"):
            runs["--dask local --workers 2"] = ["-o", str(tmp / "dataset"), "--dask", "local", "--workers", "2"]
        for name, options in runs.items():
            results = [run([*sercli, str(corpus), *options, "--overwrite"]) for _ in range(args.repeat)]
            walls = sorted(wall for wall, _ in results)
            wall = statistics.median(walls)
            print(
                f"annotate {name}: median {wall:.2f} s of {args.repeat} = {audio_s / wall:.0f}x real time "
                f"(runs {audio_s / walls[-1]:.0f}-{audio_s / walls[0]:.0f}x), {floor / wall:.2f}x the floor's speed, "
                f"peak RSS {max(rss for _, rss in results):.0f} MB (largest process)"
            )
        short = tmp / "three_seconds.wav"
        sf.write(short, source[: 3 * RATE], RATE)
        walls = [run([*sercli, str(short), "-o", "-"])[0] for _ in range(5)]
        print(f"start-up: one 3 s file, whole process: median {statistics.median(walls):.2f} s of 5 runs")
        for hours in args.long_hours:
            path = tmp / f"long_{hours:g}h.flac"
            write_long(path, hours * 3600, source)
            wall, rss = run([*sercli, str(path), "-o", str(tmp / f"long_{hours:g}h.parquet")])
            print(f"{hours:g} h file: peak RSS {rss:.0f} MB, {hours * 3600 / wall:.0f}x real time")
            path.unlink()


if __name__ == "__main__":
    sys.exit(main())
