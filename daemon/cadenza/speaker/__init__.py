"""The speaker: session, streams, queue and player in one trio program, with one owner.

- :mod:`~cadenza.speaker.queue`: the play queue, shuffle and repeat (pure).
- :mod:`~cadenza.speaker.commands`: what can be asked of the speaker, one value a command.
- :mod:`~cadenza.speaker.controller`: :class:`Controller`, the one owner of what plays:
  every command goes through ``execute`` and every player event through ``_on_event``; a
  :class:`Start` is the one way a track starts.
- :mod:`~cadenza.speaker.speaker`: :class:`Speaker`, the controller's face: the commands as
  awaitable methods, the state the API shows, ``run``.
- :mod:`~cadenza.speaker.playback`: the streams of the prepared tracks, their figures and
  the wait for enough audio to start.
- :mod:`~cadenza.speaker.tracks`: track records kept for offline play.
"""

from cadenza.errors import BadPosition, Unavailable, UnknownLink
from cadenza.speaker.controller import Controller, Start, Status
from cadenza.speaker.playback import Prepared, Stats
from cadenza.speaker.queue import REPEAT_MODES, PlayQueue, Repeat
from cadenza.speaker.speaker import Speaker

__all__ = [
    "REPEAT_MODES",
    "BadPosition",
    "Controller",
    "PlayQueue",
    "Prepared",
    "Repeat",
    "Speaker",
    "Start",
    "Stats",
    "Status",
    "Unavailable",
    "UnknownLink",
]
