"""The speaker: session, streams, queue and player in one trio program, with one owner.

- :mod:`~cadenza.speaker.queue`: the play queue, shuffle and repeat (pure).
- :mod:`~cadenza.speaker.commands`: what can be asked of the speaker, one value a command.
- :mod:`~cadenza.speaker.controller`: :class:`Speaker`, whose controller task takes every
  command and every player event from one channel and decides; the one path that starts a
  track.
- :mod:`~cadenza.speaker.playback`: the streams of the prepared tracks, their figures and
  the wait for enough audio to start.
- :mod:`~cadenza.speaker.tracks`: track records kept for offline play.
"""

from cadenza.errors import BadPosition, Unavailable, UnknownLink
from cadenza.speaker.controller import Speaker, Status
from cadenza.speaker.playback import Prepared, Stats
from cadenza.speaker.queue import REPEAT_MODES, PlayQueue, Repeat

__all__ = [
    "REPEAT_MODES",
    "BadPosition",
    "PlayQueue",
    "Prepared",
    "Repeat",
    "Speaker",
    "Stats",
    "Status",
    "Unavailable",
    "UnknownLink",
]
