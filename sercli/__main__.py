"""The ``sercli`` command (``python -m sercli``).

Until a command takes Ctrl-C over (``annotate`` saves what is finished), Ctrl-C
ends sercli at once with one line and status 130, imports included: nothing has
been written but atomically replaced files.

libmpg123 (inside libsndfile) writes notes about damaged MP3 frames straight to
file descriptor 2 ("Note: Illegal Audio-MPEG-Header ...", "Note: Trying to
resync..."): the command drops those lines and passes any other native output on.
"""

import atexit
import os
import re
import signal
import sys
import threading

MPG123_LINE = re.compile(rb"^(Note: |Warning: |\[src/libmpg123/)")
"""What libmpg123 starts its lines with."""


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGINT, _interrupted)
    _drop_decoder_chatter()
    from sercli.cli import main as run

    run()


def _interrupted(_signum, _frame) -> None:
    os.write(sys.stderr.fileno(), b"error: interrupted\n")  # the terminal: fd 2 may be the filtering pipe
    os._exit(130)


def _drop_decoder_chatter() -> None:
    """Route file descriptor 2 through a pipe that drops libmpg123's lines; Python's own stderr
    writes to the terminal directly. Started with stderr closed (``2>&-``), messages go to /dev/null
    and the work goes on."""
    if sys.stderr is None:
        null = os.open(os.devnull, os.O_WRONLY)  # descriptor 2 itself when 2 is the lowest free one
        if null != 2:
            os.dup2(null, 2)
            os.close(null)
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    terminal = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    sys.stderr.flush()
    sys.stderr = open(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")  # noqa: SIM115

    def forward() -> None:
        with open(read, "rb") as lines:
            for line in lines:
                if not MPG123_LINE.match(line):
                    os.write(terminal, line)

    thread = threading.Thread(target=forward, name="native-stderr", daemon=True)
    thread.start()

    def restore() -> None:  # closes the pipe, so that the forwarder ends after its last line
        os.dup2(terminal, 2)
        thread.join(timeout=2)

    atexit.register(restore)


if __name__ == "__main__":
    main()
