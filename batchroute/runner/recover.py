"""Replay of a killed run's journal into the store, under the run lock, before resume.

The runner side of the write-ahead journal: it reads the files (`batchroute.journal`) and hands
the rows to the store (`ResultStore.replay`); neither of those two imports the other.
"""

from __future__ import annotations

from batchroute.journal import Journal, read_journal
from batchroute.store import ResultStore


def recover_journal(store: ResultStore) -> int:
    """Commit what a killed run journaled but never flushed; returns how many records.

    Call under the run lock, before reading resume state. Every file (`.flushing`, the
    segments the writer process had not applied, then the journal) is replayed in one
    transaction, row by row (`ResultStore.replay` skips the rows
    the database holds already), so a file a flush committed just before the kill, one
    committed in part, and a replay killed before it deleted the files all come out right,
    and replaying twice changes nothing. The files go after the commit; if the replay fails,
    nothing is written and they stay for the next try.
    """
    journal = Journal(store.path)
    paths = journal.files()
    results, attempts = read_journal(*paths)
    recovered = store.replay(results, attempts)
    for path in paths:
        path.unlink(missing_ok=True)
    return recovered
