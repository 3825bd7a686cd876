"""An undo log: every step of a bring-up records how to reverse it; teardown replays them backwards."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class UndoLog:
    def __init__(self):
        self._steps: list[tuple[str, object]] = []

    def push(self, description: str, undo) -> None:
        self._steps.append((description, undo))

    def __len__(self) -> int:
        return len(self._steps)

    def unwind(self) -> list[str]:
        """Undo every step in reverse; a failing step is logged and skipped, never fatal."""
        failures = []
        while self._steps:
            description, undo = self._steps.pop()
            try:
                undo()
                log.debug("undone: %s", description)
            except OSError as exc:
                log.error("undo failed: %s: %s", description, exc)
                failures.append(f"{description}: {exc}")
        return failures
