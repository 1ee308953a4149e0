"""Common entry-point wrapper: a user error prints one clear message and exits 2, no traceback."""
import sys

from pipeline.errors import GanlabError


def run(main, usage: str) -> None:
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args):
        print(usage)
        sys.exit(0)
    try:
        main(*args)
    except TypeError as exc:
        if "positional argument" in str(exc):
            sys.exit(f"usage: {usage}")
        raise
    except GanlabError as exc:
        print(f"ganlab: {exc}", file=sys.stderr)
        sys.exit(2)
