"""A sweep's Ctrl-C wherever it lands (cluster/sweep.py `Interruption`): before Tune listens, while it
runs, between phases, twice. The tuner here follows Tune's own signal protocol (its SIGUSR1 handler set
up some time into `fit`, restoring SIGINT's when it fires) so the timing is exact; the same path on a
real Ray cluster is tests/test_ray_protocols.py's Ctrl-C during the retraining."""

import os
import signal
import threading
import time

import pytest

from cluster.sweep import Interruption


class TuneLike:
    """`fit` sets up for `setup_s` (deaf to signals, as Tune is while it builds its controller), then
    installs Tune's SIGUSR1 handler and 'trains' for up to `train_s`, stopping at its next step once the
    handler fired. Records whether it was stopped."""

    def __init__(self, setup_s: float = 0.0, train_s: float = 5.0):
        self.setup_s, self.train_s, self.stopped = setup_s, train_s, None

    def fit(self):
        time.sleep(self.setup_s)
        event, original = threading.Event(), signal.getsignal(signal.SIGINT)

        def tune_handler(signum, frame):
            event.set()
            signal.signal(signal.SIGINT, original)

        signal.signal(signal.SIGUSR1, tune_handler)
        deadline = time.time() + self.train_s
        while time.time() < deadline and not event.is_set():
            time.sleep(0.02)
        self.stopped = event.is_set()
        return ["results"]


def press_after(seconds: float, sig=signal.SIGINT) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), sig))
    timer.start()
    return timer


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
@pytest.mark.parametrize("setup_s", [0.0, 0.5], ids=["while-it-runs", "before-tune-listens"])
def test_a_press_during_fit_stops_tune_cleanly_wherever_it_lands(sig, setup_s):
    tuner = TuneLike(setup_s=setup_s)
    started = time.time()
    with Interruption() as interruption:
        press_after(0.2, sig)
        results, interrupted = interruption.fit(tuner)
    assert interrupted and tuner.stopped and results == ["results"]
    assert time.time() - started < 3, "the press waited for the phase to end"


def test_a_fit_nobody_interrupts_runs_to_its_end_and_restores_the_handlers():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    tuner = TuneLike(train_s=0.3)
    with Interruption() as interruption:
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Tune's own handler would miss early presses
        results, interrupted = interruption.fit(tuner)
    assert not interrupted and tuner.stopped is False
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_press_between_phases_starts_no_next_phase():
    with Interruption() as interruption:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            interruption.fit(TuneLike())


def test_a_second_press_stops_at_once():
    with Interruption() as interruption:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # scancel after a Ctrl-C counts as the second
            time.sleep(1)
    assert interruption.presses == 2
