"""The stage scripts dvc.yaml runs, each as `python -m stages.<kind> ...`.

Importing this package is the first thing such a command does: it hands the command to the stage
server (stages/_server.py), which forks it from an interpreter that has torch imported already.
A command with interpreter options (`python -X importtime -m ...`) runs as it is.
"""
import sys

if sys.orig_argv[1:2] == ["-m"] and sys.orig_argv[2].startswith("stages.") and sys.orig_argv[2] != "stages._server":
    from stages._server import hand_off

    hand_off()
