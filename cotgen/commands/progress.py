"""Renders a use case's progress events: rich bars on a terminal, a plain line now and then in a log."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from cotgen.app.progress import Event, Notice, ProgressEvent
from cotgen.commands.common import err_console

LOG_LINE_S = 30.0  # without a terminal (a log file, CI), one progress line per task this often


class ProgressDisplay:
    """A `Reporter` for the CLI; use as a context manager around the use case call."""

    def __init__(self, quiet: bool = False, log_every_s: float = LOG_LINE_S):
        self.quiet = quiet
        self.log_every_s = log_every_s
        self.terminal = err_console.is_terminal
        self.bars = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[extra]}"),
            console=err_console, transient=False, disable=quiet or not self.terminal,
        )
        self.tasks: dict[str, TaskID] = {}
        self.last_line: dict[str, float] = {}

    def __enter__(self) -> ProgressDisplay:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            if not self.quiet or event.level == "warning":
                style = "yellow" if event.level == "warning" else "dim"
                # soft_wrap: a path in the message stays on one line in a log; a terminal wraps it itself
                err_console.print(f"[{style}]{event.message}[/]", highlight=False, soft_wrap=True)
            return
        self._progress(event)

    def _progress(self, e: ProgressEvent) -> None:
        extra = "  ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in e.fields.items())
        description = e.description or e.task
        if e.task not in self.tasks:
            self.tasks[e.task] = self.bars.add_task(description, total=e.total, completed=e.completed, extra=extra)
            self.last_line[e.task] = time.monotonic()
        else:
            self.bars.update(self.tasks[e.task], total=e.total, completed=e.completed, description=description,
                             extra=extra)
        if self.quiet or self.terminal:
            return
        now = time.monotonic()
        if e.finished or now - self.last_line[e.task] >= self.log_every_s:
            self.last_line[e.task] = now
            count = f": {e.completed:,}" + (f"/{e.total:,}" if e.total is not None else "") if e.total or e.completed else ""
            err_console.print(f"{description}{count}{'  ' + extra if extra else ''}", highlight=False)
