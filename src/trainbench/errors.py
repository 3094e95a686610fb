"""User-facing errors: raised at the boundary, printed without a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """One or more violated constraints of a user's request.

    ``reasons`` holds every violation, each a full sentence with its numbers, so
    the user sees all of them at once instead of fixing one per attempt.
    """

    def __init__(self, reasons: list[str] | str):
        self.reasons = [reasons] if isinstance(reasons, str) else list(reasons)
        super().__init__("\n".join(self.reasons))

    def __str__(self) -> str:
        if len(self.reasons) == 1:
            return self.reasons[0]
        return "invalid configuration:\n" + "\n".join(f"  - {r}" for r in self.reasons)
