"""Common entry-point wrapper: a user error prints one clear message and exits 2, no traceback.

A stage that finished (or failed with a user error) leaves through os._exit once its output is
flushed: everything it writes is closed by then, and the interpreter's teardown of torch,
torchvision and MLflow would add 1-2 s to each of the ~80 stages of a `dvc repro`. An
unexpected exception still unwinds normally, with its traceback.
"""
import os
import sys
from pathlib import Path

from pipeline.core import cores, phases
from pipeline.core.errors import GanlabError


def run(main, usage: str) -> None:
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args):
        print(usage)
        _leave(0)
    shared = cores.share_cores()
    if shared:
        print(f"ganlab: {shared}", file=sys.stderr)
    phases.record_startup()
    try:
        main(*args)
    except TypeError as exc:
        if "positional argument" in str(exc):
            print(f"usage: {usage}", file=sys.stderr)
            _leave(1)
        raise
    except GanlabError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process fails alike: say it once
            print(f"ganlab: {exc}", file=sys.stderr)
        _leave(2)
    _leave(0)


def _leave(code: int) -> None:
    cores.unregister()  # os._exit skips atexit
    phases.write("@".join([Path(sys.argv[0]).stem, *sys.argv[1:2]]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
