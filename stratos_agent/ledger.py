"""The run's cost ledger against the user's budget.

Each spending stage books an estimate before it runs (from the plan) and the actual cost after it ran
(measured wall time x the chosen server's $/h). The graph refuses a step whose estimate would push the
committed total over the budget, so the budget is a guard, not a hope.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class LedgerEntry(BaseModel):
    stage: str
    estimated_usd: float = 0.0
    actual_usd: float | None = None  # None until the stage finished
    wall_s: float | None = None
    server: str = ""
    usd_per_hour: float = 0.0
    note: str = ""


class Ledger(BaseModel):
    budget_usd: float | None = Field(default=None, description="None = no budget constraint.")
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
        """Spent, plus estimates of stages booked but not finished (they will spend)."""
        return sum(e.actual_usd if e.actual_usd is not None else e.estimated_usd for e in self.entries)

    @property
    def remaining_usd(self) -> float | None:
        return None if self.budget_usd is None else self.budget_usd - self.committed_usd

    def refusal(self, stage: str, estimate_usd: float) -> str | None:
        """Why `stage` may not run under the budget, or None when it fits."""
        if self.budget_usd is None or estimate_usd <= 0:
            return None
        others = sum(
            e.actual_usd if e.actual_usd is not None else e.estimated_usd
            for e in self.entries
            if e.stage != stage
        )
        if others + estimate_usd > self.budget_usd + 1e-9:
            return (
                f"budget exceeded: {stage} is estimated at ${estimate_usd:.2f}, already committed "
                f"${others:.2f} of the ${self.budget_usd:.2f} budget (${self.budget_usd - others:.2f} left). "
                "Choose a cheaper setting (fewer steps/examples, a cheaper server) "
                "or ask the user for more budget."
            )
        return None

    def book(self, stage: str, estimate_usd: float, server: str, usd_per_hour: float) -> None:
        """Record the estimate of a stage about to run (replacing an earlier booking of it)."""
        self.entries = [e for e in self.entries if e.stage != stage]
        self.entries.append(
            LedgerEntry(stage=stage, estimated_usd=estimate_usd, server=server, usd_per_hour=usd_per_hour)
        )

    def settle(self, stage: str, wall_s: float, note: str = "") -> LedgerEntry:
        """Record what a finished stage actually cost: wall time x the server's hourly price."""
        for entry in self.entries:
            if entry.stage == stage:
                entry.wall_s = round(wall_s, 3)
                entry.actual_usd = round(wall_s / 3600.0 * entry.usd_per_hour, 6)
                entry.note = note
                return entry
        raise KeyError(f"stage {stage!r} was never booked")

    def rows(self) -> list[dict]:
        """Table rows for reports: one per stage plus a total against the budget."""
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
