"""A quiet, lean TensorFlow start: its C++ start-up lines stay out of every job's output, and Keras's
optional integrations are not loaded.

Importing TensorFlow writes absl's "WARNING: All log messages before absl::InitializeLog() ..." and
"I0000 ... cudart_stub.cc] Could not find cuda drivers" straight to file descriptor 2, before any
logging setting applies, and the first device query on a CPU machine logs "E0000 ... failed call to
cuInit: ... UNKNOWN ERROR (303)", which reads as a failure. `quiet_tensorflow()` sets
TF_CPP_MIN_LOG_LEVEL=3 (TensorFlow's C++ lines below FATAL, for the whole process: its routine
warnings at run time too) and filters the import's own lines: whichever module first imports
TensorFlow, the import runs with descriptor 2 going through a filter process that passes every line
that is not start-up chatter as it arrives, so a process that dies inside the import (TensorFlow
aborts on a CPU without the instructions its wheel needs) still shows why.

PIX2PIX_TF_LOGS=1, or TF_CPP_MIN_LOG_LEVEL set by the user, shows them all as TensorFlow prints them.

Importing TensorFlow imports Keras, which imports pandas, matplotlib.pyplot and IPython when they are
installed (for DataFrame inputs, its plotting helpers, notebook detection): about a second of every
trainer's start where the report's extras are installed. No job uses them through Keras, so the same
import runs with them hidden (Keras takes them as absent) and they are importable again right after.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import subprocess
import sys

SHOW_ENV = "PIX2PIX_TF_LOGS"
# absl's notice before its logging starts, and informational / warning lines (I/W) of TensorFlow's C++
# logger: "I0000 00:00:1796240324.781892   21259 cudart_stub.cc:31] ...". Errors (E/F) are kept.
CHATTER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                     r"|[IW]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] .*)$")


# Imported by Keras at its import if installed, used by no job through Keras (see the module's docstring).
KERAS_EXTRAS = ("pandas", "matplotlib", "IPython")


def quiet_tensorflow() -> None:
    """Install the quiet, lean start in this process (jobs, Tune trials, submitit jobs call it before
    anything imports TensorFlow; a second call, or one after TensorFlow loaded, changes nothing)."""
    show = os.environ.get(SHOW_ENV) == "1" or "TF_CPP_MIN_LOG_LEVEL" in os.environ and not _ours()
    if not show:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        os.environ["_PIX2PIX_QUIET_TF"] = "1"  # marks the level as ours: child processes install it again
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport(filter_lines=not show))


def _ours() -> bool:
    return os.environ.get("_PIX2PIX_QUIET_TF") == "1"


def drop_chatter(text: str) -> str:
    """`text` without TensorFlow's start-up lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not CHATTER.match(line.rstrip("\n")))


@contextlib.contextmanager
def keras_extras_hidden():
    """Within: `import pandas` (and matplotlib, IPython) raises ImportError unless already imported."""
    hidden = [name for name in KERAS_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # the import system's "not importable" marker
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first `import tensorflow` and the first `import keras` (either may come
    first and import the other) it wraps the real loader."""

    def __init__(self, filter_lines: bool):
        self.filter_lines = filter_lines
        self.pending = {"tensorflow", "keras"}

    def find_spec(self, name, path, target=None):
        if name not in self.pending:
            return None
        self.pending.remove(name)  # once per name: the real finders answer from here on
        if not self.pending:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, filter_lines=self.filter_lines and name == "tensorflow")
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, filter_lines: bool):
        self.loader = loader
        self.filter_lines = filter_lines

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with keras_extras_hidden():
            if self.filter_lines:
                self._filtered(module)
            else:
                self.loader.exec_module(module)

    def _filtered(self, module):
        """The import with descriptor 2 going through a filter in a process of its own, line by line: a
        process that dies inside the import (TensorFlow aborts on a CPU without the instructions its wheel
        needs) still shows every line it wrote, the fatal one included."""
        sys.stderr.flush()
        saved = os.dup(2)
        read, write = os.pipe()
        try:
            filter_ = subprocess.Popen([sys.executable, "-S", "-c", _FILTER, CHATTER.pattern], stdin=read,
                                       stdout=saved, stderr=saved, close_fds=True)
        except OSError:  # no process to spare: the import as it is, its lines unfiltered
            os.close(read), os.close(write), os.close(saved)
            self.loader.exec_module(module)
            return
        os.close(read)
        os.dup2(write, 2)
        os.close(write)
        try:
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)  # the filter sees the end of its input once this process holds no write end
            os.close(saved)
            filter_.wait()


# The filter: every line not start-up chatter, as it arrives (run with `python -S -c`: no site, ~20 ms).
_FILTER = """
import re, sys
chatter = re.compile(sys.argv[1])
for line in sys.stdin.buffer:
    text = line.decode("utf-8", "replace")
    if not chatter.match(text.rstrip("\\n")):
        sys.stdout.write(text)
        sys.stdout.flush()
"""
