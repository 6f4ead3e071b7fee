"""A budget for log lines: what a stranger can make us write is bounded.

Every listener logs what it refuses, and a stranger decides how often that happens: a flood
of connections, each refused with a line, fills the journal and costs CPU for nothing.
:class:`LogBudget` is a :class:`logging.Filter` on the handlers: each kind of message (the
logger's name and the message's template, not its arguments, so "refused connection from
%s" is one kind whatever the address) may write ``burst`` lines at once and ``rate`` a second
after that; what it holds back is counted, and the next line of that kind that gets through
says how many were suppressed. Warnings and errors have a budget of their own, so a flood
of info lines never hides them; tracebacks count like any other line.

Pure apart from the clock, which is passed in (``clock``, monotonic seconds).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

# Lines of one kind written at once before the budget applies: a burst of refusals in a
# second is still worth reading whole.
BURST: Final = 10
# Then one line of the kind a second: enough to see that it goes on, and from where.
RATE: Final = 1.0
# Kinds remembered (least recently seen dropped): a kind is a line of source code, so a
# program has a few hundred at most; the bound is for safety only.
MAX_KINDS: Final = 1024


class LogBudget(logging.Filter):
    """Token bucket per kind of message; see the module docstring."""

    def __init__(
        self,
        *,
        burst: int = BURST,
        rate: float = RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = float(burst)
        self.rate = rate
        self.clock = clock
        # kind -> [tokens, last refill, suppressed since the last line written]
        self._kinds: OrderedDict[tuple[str, object, bool], list[float]] = OrderedDict()
        self.suppressed = 0  # total, for tests and status

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.msg, record.levelno >= logging.WARNING)
        now = self.clock()
        state = self._kinds.get(kind)
        if state is None:
            state = self._kinds[kind] = [self.burst, now, 0.0]
            if len(self._kinds) > MAX_KINDS:
                self._kinds.popitem(last=False)
        else:
            self._kinds.move_to_end(kind)
            state[0] = min(self.burst, state[0] + (now - state[1]) * self.rate)
            state[1] = now
        if state[0] < 1.0:
            state[2] += 1
            self.suppressed += 1
            return False
        state[0] -= 1.0
        if state[2]:
            held = int(state[2])
            state[2] = 0.0
            # Said in the message itself so that every handler (journal, stderr) shows it.
            plural = "s" if held != 1 else ""
            record.msg = f"{record.msg} [{held} similar message{plural} suppressed]"
        return True


def install(handler: logging.Handler) -> LogBudget:
    """Put a LogBudget on ``handler`` (once) and return it."""
    for existing in handler.filters:
        if isinstance(existing, LogBudget):
            return existing
    budget = LogBudget()
    handler.addFilter(budget)
    return budget
