"""Keeps the local fleet running: a child that dies is restarted after a short backoff, replicas are
added or retired on request, and every change is logged and reported (status line, `up.json`).

    supervisor = Supervisor(infra=[redis, control], replicas=[...], new_replica=make_slot, ...)
    reason = supervisor.run()   # until SIGINT/SIGTERM; children keep running afterwards
    supervisor.stop()           # replicas (draining), then the control plane, then Redis

Nothing here waits on a child: the loop sleeps in `sigtimedwait` until a signal (SIGCHLD when a child
dies, SIGUSR1 for a scale request, SIGINT/SIGTERM) or the next restart or readiness check is due.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from control.localcluster import children
from control.localcluster.children import Child
from control.localcluster.runstate import ChildStatus

log = logging.getLogger(__name__)

FIRST_RESTART_S = 0.2
MAX_RESTART_S = 30.0
# A child that ran this long before dying had not been crash-looping: its next restart is quick again.
STABLE_S = 10.0
# How often starting children are checked for readiness; with nothing starting the loop just waits.
READY_POLL_S = 0.1
IDLE_S = 5.0
LIVE_STATES = ("starting", "serving", "stopping")
WATCHED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1})


def restart_delay(quick_failures: int) -> float:
    """0.2 s, 0.4 s, 0.8 s ... up to 30 s: a crash is repaired at once, a crash loop is not a busy loop.

    >>> [restart_delay(n) for n in (0, 1, 2)], restart_delay(50)
    ([0.2, 0.4, 0.8], 30.0)
    """
    return min(FIRST_RESTART_S * 2.0 ** min(quick_failures, 16), MAX_RESTART_S)


@dataclass
class Slot:
    """One place in the fleet (`redis`, `control`, `local-2`) and the process currently filling it."""

    name: str
    kind: str  # redis | control | replica
    start: Callable[[], Child]
    ready: Callable[[Child], bool]
    child: Child | None = None
    state: str = "starting"  # starting | serving | restarting | stopping | stopped
    restarts: int = 0
    quick_failures: int = 0
    started_at: float = 0.0
    died_at: float | None = None
    restart_at: float | None = None

    @property
    def pid(self) -> int:
        return self.child.pid if self.child is not None else 0

    def spawn(self) -> None:
        self.child = self.start()
        self.started_at = time.monotonic()
        self.state = "starting"
        self.restart_at = None

    def status(self) -> ChildStatus:
        pid = self.child.pid if self.child is not None and self.state != "restarting" else None
        return ChildStatus(self.name, self.kind, pid, self.state, self.restarts)


class Supervisor:
    def __init__(
        self,
        infra: Sequence[Slot],
        replicas: Sequence[Slot],
        new_replica: Callable[[str], Slot],
        on_change: Callable[[], None],
        take_scale_request: Callable[[], int | None],
        stop_grace_s: float,
    ) -> None:
        self.infra = list(infra)
        self.replicas = list(replicas)
        self.retiring: list[tuple[Slot, float]] = []
        self.new_replica = new_replica
        self.on_change = on_change
        self.take_scale_request = take_scale_request
        self.stop_grace_s = stop_grace_s
        self.wanted = len(self.replicas)

    @property
    def slots(self) -> list[Slot]:
        return [*self.infra, *self.replicas, *(slot for slot, _ in self.retiring)]

    def statuses(self) -> tuple[ChildStatus, ...]:
        return tuple(slot.status() for slot in self.slots)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> str:
        """Supervise until SIGINT or SIGTERM; returns the signal's name."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        try:
            self._scale_if_requested()
            while True:
                if self.step(time.monotonic()):
                    self.on_change()
                info = signal.sigtimedwait(WATCHED, self._timeout(time.monotonic()))
                if info is None or info.si_signo == signal.SIGCHLD:
                    continue
                if info.si_signo == signal.SIGUSR1:
                    self._scale_if_requested()
                    continue
                return signal.Signals(info.si_signo).name
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def step(self, now: float) -> bool:
        """Reap, restart what is due, notice readiness, finish retirements. True if anything changed."""
        changed = False
        for slot in [*self.infra, *self.replicas]:
            changed |= self._check(slot, now)
        changed |= self._retire(now)
        return changed

    def _timeout(self, now: float) -> float:
        due = [s.restart_at - now for s in self.slots if s.restart_at is not None]
        if any(s.state in ("starting", "stopping") for s in self.slots):
            due.append(READY_POLL_S)
        return max(0.01, min([IDLE_S, *due]))

    def _check(self, slot: Slot, now: float) -> bool:
        child = slot.child
        if slot.state == "stopped":
            return False
        if slot.state == "restarting":
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.spawn()
                slot.restarts += 1
                log.info("restarted %s pid=%d (restart %d)", slot.name, slot.pid, slot.restarts)
                return True
            return False
        if child is None:
            return False
        if not child.alive():
            self._schedule_restart(slot, child, now)
            return True
        if slot.state == "starting" and slot.ready(child):
            slot.state = "serving"
            since = f" {now - slot.died_at:.1f}s after it died" if slot.died_at is not None else ""
            log.info("%s pid=%d serving%s", slot.name, child.pid, since)
            slot.died_at = None
            return True
        return False

    def _schedule_restart(self, slot: Slot, child: Child, now: float) -> None:
        lived = now - slot.started_at
        if lived >= STABLE_S:
            slot.quick_failures = 0
        delay = restart_delay(slot.quick_failures)
        slot.quick_failures += 1
        slot.state = "restarting"
        slot.restart_at = now + delay
        slot.died_at = slot.died_at if slot.died_at is not None else now
        # Whatever it forked dies with it (its process group).
        child.signal_group(signal.SIGKILL)
        code = child.proc.returncode
        # A crash says why in its last line; a kill leaves only ordinary lines behind.
        last = child.log_tail(400).strip().splitlines()[-1:] if code > 0 else []
        log.warning(
            "%s pid=%d died (%s) after %.1fs; restarting in %.1fs%s",
            slot.name, child.pid, children.describe_exit(code), lived, delay,
            f" — last line of {child.log_path}: {last[0][-200:]}" if last else "",
        )  # fmt: skip

    # -- scaling ------------------------------------------------------------------------------------
    def _scale_if_requested(self) -> None:
        wanted = self.take_scale_request()
        if wanted is not None:
            self.scale(wanted)
            self.on_change()

    def scale(self, wanted: int) -> None:
        if wanted < 1:
            log.warning("ignoring a request for %d replicas: at least 1 is needed", wanted)
            return
        self.wanted = wanted
        log.info("scaling from %d to %d replicas", len(self.replicas), wanted)
        while len(self.replicas) < wanted:
            slot = self.new_replica(f"local-{len(self.replicas) + 1}")
            slot.spawn()
            log.info("added %s pid=%d; it joins the shared port once it serves every flow", slot.name,
                     slot.pid)  # fmt: skip
            self.replicas.append(slot)
        deadline = time.monotonic() + self.stop_grace_s
        while len(self.replicas) > wanted:
            slot = self.replicas.pop()
            slot.restart_at = None
            if slot.child is not None and slot.child.alive():
                slot.state = "stopping"
                slot.child.terminate()
                self.retiring.append((slot, deadline))
                log.info("retiring %s pid=%d (it finishes its runs first)", slot.name, slot.child.pid)

    def _retire(self, now: float) -> bool:
        changed = False
        for slot, deadline in list(self.retiring):
            child = slot.child
            assert child is not None
            if child.alive():
                if now < deadline:
                    continue
                log.warning("%s pid=%d did not stop within %.0fs; killing it", slot.name, child.pid,
                            self.stop_grace_s)  # fmt: skip
                child.signal_group(signal.SIGKILL)
            code = child.wait_or_kill(self.stop_grace_s)
            log.info("retired %s pid=%d %s", slot.name, child.pid, children.describe_exit(code))
            self.retiring.remove((slot, deadline))
            changed = True
        return changed

    # -- stopping -----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Replicas first (they drain in-flight runs), then the control plane, then Redis (AOF flushed)."""
        for slot in self.slots:
            slot.restart_at = None
        replicas = [*self.replicas, *(slot for slot, _ in self.retiring)]
        control = [s for s in self.infra if s.kind == "control"]
        rest = [s for s in self.infra if s.kind != "control"]
        for group in (replicas, control, rest):
            live = [s.child for s in group if s.child is not None and s.state in LIVE_STATES]
            children.stop_all(live, self.stop_grace_s)
            for slot in group:
                slot.state = "stopped"
