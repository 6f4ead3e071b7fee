"""The tracker: which online peers hold which files whole.

Per file it remembers the last :data:`REMEMBER` peers that announced it; a query
returns up to :data:`ANSWER` of them, most recent first, only those whose session is
live, never the asker. When a session ends, all its entries go. Pure and in memory:
entries are only meaningful while their sessions last, so nothing is persisted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

# The paper's figures: remember the last 20 peers per file, answer with up to 10.
REMEMBER = 20
ANSWER = 10

S = TypeVar("S", bound=Hashable)  # session key


@dataclass(frozen=True, slots=True)
class Entry:
    peer_id: bytes
    host: str
    port: int
    noise_static: bytes


class Tracker(Generic[S]):
    def __init__(self, remember: int = REMEMBER, answer: int = ANSWER) -> None:
        self.remember = remember
        self.answer = answer
        self._files: dict[str, OrderedDict[S, Entry]] = {}
        self._sessions: dict[S, tuple[Entry, set[str]]] = {}

    def session_started(self, session: S, entry: Entry) -> None:
        """``session`` is live and reachable at ``entry`` (from its certificate)."""
        old = self._sessions.get(session)
        files = old[1] if old else set()
        self._sessions[session] = (entry, files)
        for file_id in files:
            self._files[file_id][session] = entry

    def session_ended(self, session: S) -> None:
        record = self._sessions.pop(session, None)
        if record is None:
            return
        for file_id in record[1]:
            peers = self._files.get(file_id)
            if peers is not None:
                peers.pop(session, None)
                if not peers:
                    del self._files[file_id]

    def announce(self, session: S, file_ids: Iterable[str]) -> None:
        record = self._sessions.get(session)
        if record is None:
            raise KeyError("announce from a session that has not started")
        entry, files = record
        for file_id in file_ids:
            peers = self._files.setdefault(file_id, OrderedDict())
            peers[session] = entry
            peers.move_to_end(session)
            files.add(file_id)
            while len(peers) > self.remember:
                evicted, _ = peers.popitem(last=False)
                self._sessions[evicted][1].discard(file_id)

    def withdraw(self, session: S, file_ids: Iterable[str]) -> None:
        record = self._sessions.get(session)
        if record is None:
            return
        for file_id in file_ids:
            record[1].discard(file_id)
            peers = self._files.get(file_id)
            if peers is not None:
                peers.pop(session, None)
                if not peers:
                    del self._files[file_id]

    def query(self, file_id: str, asker: S | None, limit: int | None = None) -> list[Entry]:
        """Up to ``limit`` (at most ``answer``) live peers holding ``file_id``, newest first."""
        n = self.answer if limit is None else max(0, min(limit, self.answer))
        peers = self._files.get(file_id)
        if not peers or n == 0:
            return []
        out = []
        for session in reversed(peers):
            if session == asker:
                continue
            out.append(peers[session])
            if len(out) == n:
                break
        return out

    def files_of(self, session: S) -> set[str]:
        record = self._sessions.get(session)
        return set(record[1]) if record else set()

    def __len__(self) -> int:
        return len(self._files)
