"""Make DVC rewrite `.dvc/tmp/rwlock` whole, so that a killed `dvc` cannot leave it empty.

DVC 3.67.1 (`dvc/rwlock.py`, `_edit_rwlock`) rewrites its rwlock file in place on every stage
lock and unlock: `open(path, "w")` empties the file, `json.dump` fills it. A `dvc repro` killed
between the two (SIGKILL, or Ctrl-C mid-dump) leaves an empty or cut file, and every later `dvc`
command in that repository stops with "Unable to read RWLock-file '.dvc/tmp/rwlock'. JSON
structure is corrupted" until someone deletes the file by hand. Here the new content goes to a
file beside it, which then replaces it (`os.replace`, atomic on one filesystem): a kill leaves the
old lock or the new one. The old one names the killed process, which DVC already clears as dead.

This module is imported at every interpreter start of the environment (the `.pth` beside it) and
does nothing until DVC imports `dvc.rwlock`; then it wraps that one function. Remove it once DVC
writes the file atomically (tests/test_dvc_rwlock.py fails when DVC's own write no longer leaves
the file empty).
"""
from __future__ import annotations

import os
import sys

TARGET = "dvc.rwlock"
SUFFIX = ".writing"  # DVC serialises edits of the rwlock with its own lock file, so one name is enough


class _ReplaceWhole:
    """`with _ReplaceWhole(path) as f:` writes beside `path` and replaces it once the write ended."""

    def __init__(self, path: str, encoding: str | None):
        self.path, self.part = path, path + SUFFIX
        self.file = open(self.part, "w", encoding=encoding)

    def __enter__(self):
        return self.file

    def __exit__(self, kind, error, trace):
        self.file.close()
        if kind is None:
            os.replace(self.part, self.path)  # guards against a killed process, not a power cut (no fsync)


class _WholeFileWrites:
    """DVC's filesystem object, but a file opened for writing replaces the old one when closed."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def open(self, path, mode="r", encoding=None, **kwargs):
        if mode == "w" and not kwargs and self._fs.protocol == "local":
            return _ReplaceWhole(path, encoding)
        return self._fs.open(path, mode, encoding=encoding, **kwargs)


def patch(rwlock_module) -> bool:
    """Wrap `rwlock_module._edit_rwlock`; False (nothing done) where DVC no longer has it."""
    edit = getattr(rwlock_module, "_edit_rwlock", None)
    if edit is None or hasattr(edit, "dvc_original"):
        return False
    from contextlib import contextmanager  # here, not at the top: this module loads at every interpreter start

    @contextmanager
    def edit_rwlock(lock_dir, fs, hardlink):
        with edit(lock_dir, _WholeFileWrites(fs), hardlink) as lock:
            yield lock

    edit_rwlock.dvc_original = edit
    rwlock_module._edit_rwlock = edit_rwlock
    return True


class _PatchOnImport:
    """A meta path finder that finds nothing itself: when `dvc.rwlock` is first imported, it
    patches the module after it has run. (Not an importlib.abc subclass: importing that costs
    every interpreter start ~15 ms.)"""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        import importlib.util

        sys.meta_path.remove(self)  # one module, once: find the real spec without us in the way
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)

            spec.loader.exec_module = exec_module
        return spec


if TARGET in sys.modules:
    patch(sys.modules[TARGET])
elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PatchOnImport())
