"""The fast path every launcher trains on: a caching allocator preloaded, threads sized to the CPUs given.

Why: TensorFlow's CPU kernels allocate and free buffers of many megabytes every
step. glibc's malloc returns them to the kernel (mmap/munmap) and page-faults
them back in on the next step: measured on 2 cores at 256 px, ~56,000 page
faults and 0.2-2 s of kernel time per U-Net step, worse under
MirroredStrategy. A caching allocator keeps them. mimalloc comes with the
project (PyPI's `cmeel-mimalloc`, so no root is needed); Debian's tcmalloc
(`libtcmalloc-minimal4`, what TensorFlow's CPU performance guide suggests) is
as fast here and can be chosen instead.

An allocator must be in the process before Python starts, so the jobs
re-execute themselves once with `LD_PRELOAD` set (`reexec_with_allocator`,
called by `gan.cli.run_main`), Ray workers get it through the runtime
environment and submitit/SLURM tasks through their set-up lines
(`python -m gan.fastpath` prints the variables to export).

    PIX2PIX_ALLOCATOR=auto (default: mimalloc, else tcmalloc) | mimalloc | tcmalloc | system | /path/lib.so

`cpus_given()` is the CPU count a process was given (affinity, SLURM, Ray);
the trainer sizes TensorFlow's thread pools (`size_thread_pools`) and the
metric workers to it.

Standard library only at import: it runs before TensorFlow is imported
(`size_thread_pools` imports it when called).
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig
from pathlib import Path

ALLOCATOR_ENV = "PIX2PIX_ALLOCATOR"
_REEXEC_MARK = "PIX2PIX_ALLOCATOR_REEXEC"  # set in the re-executed process: never loop
FIX = "pip install cmeel-mimalloc  (or: apt-get install libtcmalloc-minimal4)"


def _mimalloc() -> str | None:
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    found = [p for root in roots for p in glob.glob(os.path.join(root, "cmeel.prefix", "lib", "libmimalloc.so*"))]
    return min(found, key=len) if found else None  # libmimalloc.so (the shortest name) before its versions


def _tcmalloc() -> str | None:
    for pattern in ("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/*-linux-gnu/libtcmalloc.so.4",
                    "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def find_allocator(choice: str | None = None) -> str | None:
    """Path of the allocator library to preload, or None (`system`, or nothing installed, or not Linux)."""
    choice = (choice or os.environ.get(ALLOCATOR_ENV) or "auto").strip()
    if choice == "system" or not sys.platform.startswith("linux"):
        return None
    if choice == "mimalloc":
        return _mimalloc()
    if choice == "tcmalloc":
        return _tcmalloc()
    if choice == "auto":
        return _mimalloc() or _tcmalloc()
    return choice if Path(choice).is_file() else None


def loaded_allocator(maps: str = "/proc/self/maps") -> str | None:
    """The caching allocator mapped into this process (read from /proc/self/maps), or None."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "libmimalloc" in path or "libtcmalloc" in path or "libjemalloc" in path:
            return path
    return None


# mimalloc hands freed pages back to the kernel after 10 ms; TensorFlow frees and reallocates the same
# buffers every step, so each hand-back is paid again in page faults. Keeping them (the process's
# peak is unchanged) took the U-Net's kernel time from 20-33 to 15 ms per 550 ms step. A value the
# user set wins.
ALLOCATOR_TUNING = {"libmimalloc": {"MIMALLOC_PURGE_DELAY": "-1"}}


def _tuning(lib: str) -> dict[str, str]:
    return {k: v for marker, tuning in ALLOCATOR_TUNING.items() if marker in os.path.basename(lib)
            for k, v in tuning.items()}


def allocator_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: os.environ) with LD_PRELOAD naming the allocator first (the user's own preloads
    kept after it, colon-separated so the value survives a shell's word splitting) and the allocator's
    tuning, if one is found."""
    env = dict(os.environ if env is None else env)
    lib = find_allocator(env.get(ALLOCATOR_ENV))
    if lib:
        rest = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p and p != lib]
        env["LD_PRELOAD"] = ":".join([lib, *rest])
        for key, value in _tuning(lib).items():
            env[key] = env.get(key) or value
    return env


def fast_path_vars(env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables the fast path sets (LD_PRELOAD and the allocator's tuning); {} when no allocator
    is found. What Ray's runtime environment and the sbatch set-up line carry to the workers."""
    full = allocator_env(env)
    lib = find_allocator(full.get(ALLOCATOR_ENV))
    if not lib:
        return {}
    return {k: full[k] for k in ("LD_PRELOAD", *_tuning(lib))}


def reexec_with_allocator(log=None) -> None:
    """Re-execute this Python command once with the allocator preloaded; a no-op when it already is,
    when `PIX2PIX_ALLOCATOR=system`, or when none is installed (then one warning line with the fix)."""
    log = log or (lambda line: print(line, file=sys.stderr))
    if os.environ.pop(_REEXEC_MARK, None) or loaded_allocator():  # popped: children may re-exec themselves
        return
    if (os.environ.get(ALLOCATOR_ENV) or "auto") == "system":
        return
    env = allocator_env()
    if not find_allocator(env.get(ALLOCATOR_ENV)):
        if sys.platform.startswith("linux"):
            log(f"warning: no caching allocator found; TensorFlow steps run up to 1.5x slower on glibc's "
                f"malloc. Fix: {FIX}")
        return
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


CPUS_ENV = "PIX2PIX_CPUS"  # set by the Ray trainable from the CPUs Tune assigned to the trial


def cpus_given() -> int:
    """The CPUs this process may use: the least of its affinity mask, SLURM's --cpus-per-task and the
    CPUs Ray assigned (PIX2PIX_CPUS). TensorFlow sizes its thread pools to the whole machine otherwise,
    so trials sharing a node oversubscribe it."""
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1]
    for name in (CPUS_ENV, "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        try:
            if value and float(value) >= 1:
                counts.append(int(float(value)))
        except ValueError:
            print(f"warning: ${name}={value!r} is not a CPU count; ignored", file=sys.stderr)
    return max(1, min(counts))


def size_thread_pools(cpus: int, log=print) -> None:
    """TensorFlow's intra- and inter-op pools to `cpus` threads (before TensorFlow starts its runtime).
    The pool size also fixes how a kernel splits its sums, so a generator's photos are identical to the
    last bit only at the thread count they were first made with (the re-scoring of a run relies on it)."""
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:  # the runtime already started in this process (e.g. a second run in it)
        have = tf.config.threading.get_intra_op_parallelism_threads()
        if have not in (0, cpus):
            log(f"note: TensorFlow already started with {have} threads per pool; {cpus} CPUs were given")


def main() -> None:
    """`python -m gan.fastpath`: print the fast path's variables for a shell's `export $(...)`
    (`PIX2PIX_FAST_PATH=none` when no allocator is found, so the export still has an argument)."""
    found = fast_path_vars()
    print(" ".join(f"{k}={v}" for k, v in found.items()) if found else "PIX2PIX_FAST_PATH=none")


if __name__ == "__main__":
    main()
