"""The one exception type for bad user input.

Commands catch `UserError` at the top, print its message as one line on
stderr and exit with `EXIT_USAGE`; anything else is a bug and keeps its
traceback.
"""

EXIT_USAGE = 2  # bad input: a flag, a file, a folder
EXIT_DIVERGED = 3  # training stopped on a NaN/inf loss (status 'failed')
EXIT_PREEMPTED = 75  # SIGTERM/SIGUSR1: checkpointed, status 'preempted'; rerun to resume (EX_TEMPFAIL)


class UserError(Exception):
    """Bad input; the message names the file or flag and what is wrong."""
