"""The run's cost ledger against the user's budget, and the meter that caps paid calls inside a stage.

Each attempt of a spending stage books an estimate before it runs (from the plan) and its actual cost
after it ran, failed or not: measured wall time x the chosen server's $/h, plus the metered spend of the
paid endpoint calls it made (tokens x the endpoint's $/token). Attempts are never replaced: money spent on
a failed or edited-away attempt stays spent. The graph refuses a step whose estimate would push the
committed total over the budget, and while a stage runs a `SpendMeter` holds its paid calls to what is
left, so a stage that costs more than its estimate stops at the budget instead of passing it.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from stratos_agent.errors import StratosError

EDIT_BUDGET = "`stratos approve THREAD --edit budget_usd=...`"


class BudgetExhausted(StratosError):
    """A paid call would pass the run's budget, or the run has no finite budget to spend against."""

    tool_error_kind = "budget"  # the planner stops and asks instead of retrying


class LedgerEntry(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    stage: str
    attempt: int = 1
    estimated_usd: float = 0.0
    actual_usd: float | None = None  # None until the attempt ended
    wall_s: float | None = None
    server: str = ""
    usd_per_hour: float = 0.0
    metered_usd: float = 0.0  # paid endpoint calls (teacher, planner) during the attempt
    tokens: int = 0
    failed: bool = False
    note: str = ""


def _bounded(budget_usd: float | None) -> bool:
    return budget_usd is not None and math.isfinite(budget_usd)


class Ledger(BaseModel):
    budget_usd: float | None = Field(default=None, description="None = no budget: only free stages may run.")
    entries: list[LedgerEntry] = Field(default_factory=list)

    @classmethod
    def from_state(cls, budget_usd: float | None, entries: list[dict] | None) -> Ledger:
        return cls(budget_usd=budget_usd, entries=[LedgerEntry.model_validate(e) for e in entries or []])

    def to_state(self) -> list[dict]:
        return [e.model_dump(mode="json") for e in self.entries]

    @property
    def spent_usd(self) -> float:
        return sum(e.actual_usd or 0.0 for e in self.entries)

    @property
    def committed_usd(self) -> float:
        """Spent, plus estimates of attempts booked but not ended (they will spend)."""
        return sum(e.actual_usd if e.actual_usd is not None else e.estimated_usd for e in self.entries)

    @property
    def remaining_usd(self) -> float | None:
        return self.budget_usd - self.committed_usd if _bounded(self.budget_usd) else None

    def refusal(self, stage: str, estimate_usd: float) -> str | None:
        """Why a new attempt of `stage` may not run under the budget, or None when it fits. Earlier
        attempts of the same stage count at what they cost: re-running never frees money."""
        if estimate_usd <= 0:
            return None
        if not _bounded(self.budget_usd):
            return (f"{stage} is estimated at ${estimate_usd:.2f} but the run has no finite budget; paid stages "
                    f"never run unguarded. Set one ({EDIT_BUDGET}).")
        committed = self.committed_usd
        if committed + estimate_usd > self.budget_usd + 1e-9:  # type: ignore[operator]
            return (
                f"budget exceeded: {stage} is estimated at ${estimate_usd:.2f}, already committed "
                f"${committed:.2f} of the ${self.budget_usd:.2f} budget (${self.budget_usd - committed:.2f} left). "  # type: ignore[operator]
                "Choose a cheaper setting (fewer steps/examples, a cheaper server) "
                "or ask the user for more budget."
            )
        return None

    def book(self, stage: str, estimate_usd: float, server: str, usd_per_hour: float) -> LedgerEntry:
        """Record a new attempt of a stage about to run (earlier attempts stay, at what they cost)."""
        entry = LedgerEntry(stage=stage, attempt=1 + sum(e.stage == stage for e in self.entries),
                            estimated_usd=estimate_usd, server=server, usd_per_hour=usd_per_hour)
        self.entries.append(entry)
        return entry

    def spend_cap(self, entry: LedgerEntry) -> float | None:
        """What a booked attempt may spend on metered calls: the budget less everything else committed
        (not its own estimate: an attempt that costs more than estimated runs on until the budget ends).
        None = no finite budget (the meter then refuses every paid call)."""
        if not _bounded(self.budget_usd):
            return None
        others = sum(e.actual_usd if e.actual_usd is not None else e.estimated_usd
                     for e in self.entries if e.id != entry.id)
        return max(0.0, self.budget_usd - others)  # type: ignore[operator]

    def settle(
        self, stage: str, wall_s: float, note: str = "", *, metered_usd: float = 0.0, tokens: int = 0,
        failed: bool = False,
    ) -> LedgerEntry:
        """Record what the open attempt of `stage` actually cost: wall time x the server's $/h plus its
        metered calls."""
        entry = next((e for e in reversed(self.entries) if e.stage == stage and e.actual_usd is None), None)
        if entry is None:
            raise KeyError(f"stage {stage!r} has no open booking")
        entry.wall_s = round(wall_s, 3)
        entry.metered_usd = round(metered_usd, 6)
        entry.tokens = tokens
        entry.actual_usd = round(wall_s / 3600.0 * entry.usd_per_hour + metered_usd, 6)
        entry.failed = failed
        entry.note = note
        return entry

    def merge(self, entries: list[LedgerEntry]) -> None:
        """Add ended attempts this ledger does not hold yet (from the run folder's journal)."""
        known = {e.id for e in self.entries}
        self.entries += [e for e in entries if e.id not in known]

    def set_running_total(self, stage: str, usd: float, tokens: int) -> None:
        """One entry that carries a running total (the planner's paid turns), raised as it grows."""
        entry = next((e for e in self.entries if e.stage == stage), None)
        if entry is None:
            entry = LedgerEntry(stage=stage, server="planner endpoint")
            self.entries.append(entry)
        entry.actual_usd, entry.metered_usd, entry.tokens = round(usd, 6), round(usd, 6), tokens

    def rows(self) -> list[dict]:
        """Table rows for reports: one per attempt plus a total against the budget."""
        rows = [e.model_dump(mode="json") for e in self.entries]
        rows.append(
            {
                "stage": "total",
                "estimated_usd": round(sum(e.estimated_usd for e in self.entries), 6),
                "actual_usd": round(self.spent_usd, 6),
                "budget_usd": self.budget_usd,
            }
        )
        return rows


# ----------------------------------------------------------------------------- metering paid calls
@dataclass
class SpendMeter:
    """Holds paid calls to a cap. A call reserves its worst-case price before it is sent and is charged
    its measured usage after, so concurrent calls together never pass the cap.

    cap_usd None = no finite budget: every paid call is refused (free calls, $0/token, always pass)."""

    cap_usd: float | None
    spent_usd: float = 0.0
    tokens: int = 0
    calls: int = 0
    _held: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, usd: float, what: str) -> float:
        """Hold `usd` for one call of `what`; BudgetExhausted when that could pass the cap."""
        if usd <= 0:
            return 0.0
        with self._lock:
            if self.cap_usd is None:
                raise BudgetExhausted(
                    f"{what} is a paid call but the run has no finite budget; paid calls never run unguarded. "
                    f"Set a budget ({EDIT_BUDGET})."
                )
            if self.spent_usd + self._held + usd > self.cap_usd + 1e-12:
                raise BudgetExhausted(
                    f"budget exhausted: {what} could cost up to ${usd:.4f}, and this stage has spent "
                    f"${self.spent_usd:.4f} of the ${self.cap_usd:.4f} left in the budget. Finished work is kept "
                    f"(paid answers are cached); raise the budget to continue ({EDIT_BUDGET})."
                )
            self._held += usd
            return usd

    def charge(self, held: float, usd: float, tokens: int) -> None:
        """Settle a reservation at the call's measured cost (`held` 0 for a call that was never held)."""
        with self._lock:
            self._held -= held
            self.spent_usd += usd
            self.tokens += tokens
            self.calls += 1

    def release(self, held: float) -> None:
        """A call that failed before an answer: nothing was charged."""
        with self._lock:
            self._held -= held


_ACTIVE: ContextVar[SpendMeter | None] = ContextVar("stratos_spend_meter", default=None)


def active_meter() -> SpendMeter | None:
    """The meter of the stage running in this context (None outside a graph stage: a CLI command the
    user typed spends what it spends)."""
    return _ACTIVE.get()


@contextmanager
def metering(cap_usd: float | None) -> Iterator[SpendMeter]:
    """Meter every paid call made in this context (threads must be handed the meter explicitly)."""
    meter = SpendMeter(cap_usd)
    token = _ACTIVE.set(meter)
    try:
        yield meter
    finally:
        _ACTIVE.reset(token)
