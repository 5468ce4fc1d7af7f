#!/usr/bin/env bash
# Regenerates sample_audio/: synthetic speech (espeak-ng) joined by silences (sox).
# Needs: apt-get install espeak-ng sox
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/sample_audio"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

say() {  # say NAME VOICE SPEED PITCH TEXT: one utterance as 22.05 kHz mono WAV
    espeak-ng -v "$2" -s "$3" -p "$4" -w "$work/$1.wav" "$5"
}

say a en-us 150 50 "I can't believe you did that again, this is the last time."
say b en-us 120 30 "Well, I suppose we could try it tomorrow, if you like."
say c en-gb 175 70 "Oh wow, that is wonderful news, congratulations!"
say d en-us 110 20 "I miss how things used to be."
sox -n -r 22050 -c 1 "$work/gap.wav" trim 0 1.0

# Three utterances separated by one second of silence, 16 kHz mono WAV.
sox "$work/a.wav" "$work/gap.wav" "$work/b.wav" "$work/gap.wav" "$work/c.wav" -r 16000 "$out/three_utterances.wav"
# Stereo 44.1 kHz WAV: a different voice on each channel, in turn.
sox "$work/c.wav" "$work/gap.wav" "$work/d.wav" -r 44100 -c 2 "$out/stereo_44k.wav"
# FLAC at 48 kHz with a long pause in the middle.
sox "$work/d.wav" "$work/gap.wav" "$work/gap.wav" "$work/a.wav" -r 48000 "$out/long_pause.flac"
ls -l "$out"
