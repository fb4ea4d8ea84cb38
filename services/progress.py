"""A progress bar over log positions for the log tools (`flows replay`, `rebuild`, `verify`).

Drawn on the given stream (stderr) only when it is a terminal: piped or captured output (a
script, CI, a test) gets no bar and no control characters, so stdout and stderr stay parseable.

    with LogProgress("replay", first=1, last=end, stream=sys.stderr) as bar:
        for message in ...:
            bar.reached(message.position)
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self, TextIO

from tqdm import tqdm

__all__ = ["LogProgress"]


class LogProgress:
    """Progress from log position `first` to `last` (inclusive), in positions."""

    def __init__(
        self,
        description: str,
        *,
        first: int,
        last: int,
        stream: TextIO,
        enabled: bool | None = None,
    ) -> None:
        self._start = max(first - 1, 0)
        self._done = self._start
        self._last = last
        shown = _is_terminal(stream) if enabled is None else enabled
        self._bar: tqdm[Any] | None = None
        if shown:
            self._bar = tqdm(
                total=max(last - self._start, 0),
                desc=description,
                unit="pos",
                unit_scale=True,
                file=stream,
                dynamic_ncols=True,
                leave=True,
            )

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def reached(self, position: int, last: int | None = None) -> None:
        """The tool has handled the log up to `position`; `last` moves the end (a growing log)."""
        if self._bar is None:
            return
        if last is not None and last > self._last:
            self._last = last
            self._bar.total = last - self._start
            self._bar.refresh()
        if position > self._done:
            self._bar.update(position - self._done)
            self._done = position

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
