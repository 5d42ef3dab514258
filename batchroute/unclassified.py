"""What `batchroute classify` could not classify, said the way a bad input is said.

Each record that cannot be classified keeps its line on stdout with its error; this tally names
the file, line and key of the first few on stderr and gives the verdict: a field the prompt needs
that *no* record has is a wrong `--field` or a job that does not fit the input (exit 2, one
line); some bad records among good ones make exit 4, as a run that leaves invalid records.
"""

from __future__ import annotations

from pathlib import Path

from batchroute.errors import ConfigError


class Unclassified:
    """The records `classify` could not classify: stderr names the first few (file, line, key)."""

    SHOWN = 5

    def __init__(self, path: Path, field: str | None, *, job: bool) -> None:
        self.path = path
        self.given = "--field" if field else "the job's prompt" if job else "the default --field"
        self.seen = self.bad = self.lacking = 0
        self.said: list[str] = []
        self.first_lack = ""

    def note(self, line_no: int, reason: str, lacks: str | None, has: list[str]) -> None:
        """One record not classified: why, and the prompt field it lacks (None: not a field)."""
        self.bad += 1
        self.lacking += lacks is not None
        if lacks is not None:
            reason = f"no field {lacks!r} ({self.given}); its fields: {', '.join(has) or 'none'}"
        if lacks is not None and self.lacking == 1:
            self.first_lack = f"{self.path} line {line_no}: {reason}"
        if len(self.said) < self.SHOWN:
            self.said.append(f"batchroute: {self.path} line {line_no}: {reason}")

    def check_all_lacking(self) -> None:
        """Nothing classified, for want of a field: a wrong argument or job, not bad records
        (a line that is not JSON besides does not make `--field nope` right)."""
        if self.lacking and self.bad == self.seen:
            raise ConfigError(f"{self.first_lack}; no record of the file has it")

    def lines(self) -> list[str]:
        """What stderr says when some records were not classified."""
        more = self.bad - len(self.said)
        tail = [f"batchroute: ... and {more} more"] if more else []
        n = f"{self.bad} of {self.seen} records"
        return [*self.said, *tail, f"batchroute: {self.path}: {n} could not be classified"]
