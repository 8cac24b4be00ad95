"""The one exception type for bad user input.

Commands catch `UserError` at the top, print its message as one line on
stderr and exit with `EXIT_USAGE`; anything else is a bug and keeps its
traceback.
"""

EXIT_USAGE = 2  # bad input: a flag, a file, a folder
EXIT_DIVERGED = 3  # training stopped on a NaN/inf loss (status 'failed')
EXIT_DISK_FULL = 74  # no space left on device: status 'failed' with where; free space, rerun to resume (EX_IOERR)
EXIT_PREEMPTED = 75  # SIGTERM/SIGUSR1: checkpointed, status 'preempted'; rerun to resume (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C before training started (the shell's 128 + SIGINT)


class UserError(Exception):
    """Bad input; the message names the file or flag and what is wrong."""


class DiskFull(Exception):
    """No space left on device; the message names where. The newest intact checkpoint is kept."""


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC as Python raises it, or as TensorFlow reports it (ResourceExhaustedError from SaveV2, ...)."""
    import errno
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return type(error).__name__ == "ResourceExhaustedError" and "No space left on device" in str(error)


def raise_for_write(error: BaseException, what: str):
    """Turn a failed write into the one-line error it deserves: DiskFull for ENOSPC, else a UserError
    naming `what` (the flag and folder) and the system's reason (read-only filesystem, permission, a file
    in the way)."""
    if is_disk_full(error):
        raise DiskFull(f"{what}: no space left on device") from None
    reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    where = f": {error.filename}" if getattr(error, "filename", None) else ""
    raise UserError(f"{what} ({reason}{where})") from None
