"""The log budget: a flood of one kind of line is cut, counted, and said."""

from __future__ import annotations

import logging

from cadenza.system.logbudget import LogBudget, install


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(
    msg: str, *args: object, level: int = logging.INFO, name: str = "t"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_flood_of_one_kind_is_cut_and_the_count_is_said_on_the_next_line() -> None:
    clock = Clock()
    budget = LogBudget(burst=10, rate=1.0, clock=clock)
    passed = [budget.filter(_record("refused %s", f"10.0.0.{i}")) for i in range(30_000)]
    assert sum(passed) == 10
    assert budget.suppressed == 29_990
    clock.now = 1.0
    line = _record("refused %s", "10.0.0.1")
    assert budget.filter(line)
    assert line.getMessage() == "refused 10.0.0.1 [29990 similar messages suppressed]"
    # The next one within the second is held back again, then counted on its own.
    assert not budget.filter(_record("refused %s", "x"))
    clock.now = 2.0
    again = _record("refused %s", "y")
    assert budget.filter(again) and again.getMessage().endswith("[1 similar message suppressed]")


def test_other_kinds_and_warnings_have_budgets_of_their_own() -> None:
    budget = LogBudget(burst=2, rate=0.0, clock=Clock())
    for _ in range(5):
        budget.filter(_record("flood %s", 1))
    assert budget.filter(_record("something else"))
    assert budget.filter(_record("flood %s", 1, level=logging.WARNING))
    assert budget.filter(_record("flood %s", 1, name="other.logger"))


def test_install_puts_one_budget_on_a_handler() -> None:
    handler = logging.StreamHandler()
    first = install(handler)
    assert install(handler) is first
    assert handler.filters == [first]
