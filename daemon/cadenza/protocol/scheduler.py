"""The send scheduler: which frame goes on the wire next.

Rules, in order:

1. Connection-management frames (window updates, resets, pings, goaway) go
   first; they are tiny and unblock the peer.
2. Among channels with data and send credit, the most urgent priority level
   wins, and channels of one level take turns frame by frame (round robin),
   so one bulk transfer cannot hold up another of the same urgency.
3. Nothing starves: while a less urgent level waits, it accrues the bytes
   sent ahead of it; once that passes :data:`STARVATION_BUDGET` it sends one
   frame. A waiting level therefore gets at least about
   ``MAX_FRAME_PAYLOAD / STARVATION_BUDGET`` of the link.
4. Messages on one channel leave in the order they were queued: the channel is
   filed under the priority of its head message.
5. A channel without send credit (flow control) is parked until the peer
   grants more; it never blocks the others.

Pure data structure: no I/O, no clocks.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from .errors import LocalProtocolError
from .frames import (
    END_CHANNEL,
    END_MESSAGE,
    FRAME_HEADER,
    MAX_FRAME_PAYLOAD,
    FrameType,
    data_flags,
)

# Bytes sent by more urgent levels before a waiting level gets a frame: ~11% of the link.
STARVATION_BUDGET = 128 * 1024
LEVELS = 4


class _Out:
    """One queued outgoing message (or bare end-of-channel marker)."""

    __slots__ = ("bulk", "data", "end_channel", "offset", "priority")

    def __init__(self, data: memoryview, priority: int, bulk: bool, end_channel: bool) -> None:
        self.data = data
        self.offset = 0
        self.priority = priority
        self.bulk = bulk
        self.end_channel = end_channel


@dataclass(eq=False)
class SendChannel:
    """Send-side state of one channel."""

    id: int
    window: int
    queue: deque[_Out] = field(default_factory=deque)
    queued_bytes: int = 0
    level: int | None = None  # which ready list holds it, if any
    closed: bool = False  # END_CHANNEL queued or reset: nothing more may be queued


class SendScheduler:
    def __init__(self) -> None:
        self._urgent: deque[bytes] = deque()
        self._ready: list[OrderedDict[int, SendChannel]] = [OrderedDict() for _ in range(LEVELS)]
        self._starved = [0] * LEVELS
        self.queued_bytes = 0

    # --- queueing ------------------------------------------------------------------------------

    def push_urgent(self, frame: bytes) -> None:
        self._urgent.append(frame)
        self.queued_bytes += len(frame)

    @property
    def urgent_frames(self) -> int:
        return len(self._urgent)

    def push(
        self,
        ch: SendChannel,
        data: bytes | bytearray | memoryview,
        priority: int,
        *,
        bulk: bool,
        end_channel: bool,
    ) -> None:
        if ch.closed:
            raise LocalProtocolError(f"channel {ch.id} is closed for sending")
        if not 0 <= priority < LEVELS:
            raise LocalProtocolError(f"priority {priority} out of range 0..{LEVELS - 1}")
        out = _Out(memoryview(data), priority, bulk, end_channel)
        ch.queue.append(out)
        ch.queued_bytes += len(out.data)
        self.queued_bytes += len(out.data)
        if end_channel:
            ch.closed = True
        if len(ch.queue) == 1:
            self._file(ch)

    def set_priority(self, ch: SendChannel, priority: int) -> None:
        """Re-prioritise everything still queued on ``ch``."""
        if not 0 <= priority < LEVELS:
            raise LocalProtocolError(f"priority {priority} out of range 0..{LEVELS - 1}")
        for out in ch.queue:
            out.priority = priority
        if ch.level is not None and ch.level != priority:
            self._unfile(ch)
            self._file(ch)

    def grant(self, ch: SendChannel, increment: int) -> None:
        """Flow-control credit arrived for ``ch``."""
        ch.window += increment
        if ch.level is None and ch.queue:
            self._file(ch)

    def drop(self, ch: SendChannel) -> None:
        """Forget everything queued on ``ch`` (reset or cancelled)."""
        self._unfile(ch)
        self.queued_bytes -= ch.queued_bytes
        ch.queue.clear()
        ch.queued_bytes = 0
        ch.closed = True

    # --- dequeueing ----------------------------------------------------------------------------

    def has_sendable(self) -> bool:
        return bool(self._urgent) or any(self._ready)

    def next_frame(self, room: int) -> tuple[bytes, memoryview | None] | None:
        """The next frame that fits in ``room`` bytes (header included), or None.

        Returns ``(header_or_whole_frame, payload)``; payload is None for urgent
        frames, which come prebuilt. A message is split across frames only
        when it does not fit in a whole frame anyway, or when nothing else is
        packed (``room`` is the full plaintext), so chunks usually arrive
        whole and can be handed over without copying.
        """
        if self._urgent:
            if len(self._urgent[0]) > room:
                return None
            frame = self._urgent.popleft()
            self.queued_bytes -= len(frame)
            return frame, None
        level = self._pick_level()
        if level is None:
            return None
        ready = self._ready[level]
        ch = next(iter(ready.values()))
        out = ch.queue[0]
        remaining = len(out.data) - out.offset
        limit = min(room - FRAME_HEADER.size, MAX_FRAME_PAYLOAD, ch.window)
        if remaining > limit and limit < min(MAX_FRAME_PAYLOAD, ch.window):
            # It would fit whole in a fresh transport message: don't split it to fill this one.
            return None
        if limit <= 0 and remaining > 0:
            return None
        n = min(remaining, limit)
        piece = out.data[out.offset : out.offset + n]
        out.offset += n
        ch.window -= n
        ch.queued_bytes -= n
        self.queued_bytes -= n
        last = out.offset == len(out.data)
        flags = data_flags(
            out.priority, bulk=out.bulk, end_message=last, end_channel=last and out.end_channel
        )
        header = FRAME_HEADER.pack(FrameType.DATA, flags, ch.id, n)
        self._account(level, n + FRAME_HEADER.size)
        if last:
            ch.queue.popleft()
        # Round robin within the level: this channel goes to the back (or elsewhere).
        self._unfile(ch)
        if ch.queue:
            self._file(ch)
        return header, piece

    # --- internals -----------------------------------------------------------------------------

    def _file(self, ch: SendChannel) -> None:
        head = ch.queue[0]
        # A zero-length message (e.g. a bare END_CHANNEL) needs no credit.
        if ch.window <= 0 and len(head.data) > head.offset:
            ch.level = None
            return
        ch.level = head.priority
        self._ready[head.priority][ch.id] = ch

    def _unfile(self, ch: SendChannel) -> None:
        if ch.level is not None:
            self._ready[ch.level].pop(ch.id, None)
            ch.level = None

    def _pick_level(self) -> int | None:
        best = None
        for level in range(LEVELS):
            if self._ready[level]:
                if best is None:
                    best = level
                elif self._starved[level] >= STARVATION_BUDGET:
                    return level
        return best

    def _account(self, sent_level: int, nbytes: int) -> None:
        self._starved[sent_level] = 0
        for level in range(sent_level + 1, LEVELS):
            if self._ready[level]:
                self._starved[level] += nbytes


__all__ = ["END_CHANNEL", "END_MESSAGE", "SendChannel", "SendScheduler"]
