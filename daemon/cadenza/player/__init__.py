"""The player: Ogg Vorbis from the stream buffer to an ALSA PCM, gapless, with volume.

:mod:`~cadenza.player.decoder` (libvorbisfile over the stream buffer),
:mod:`~cadenza.player.output` (the ALSA PCM, or clock pacing without a card),
:mod:`~cadenza.player.volume` (software or hardware mixer, one dB curve) and
:mod:`~cadenza.player.player` (the thread that ties them together).
"""

from cadenza.player.decoder import DecodeCancelled, DecodeError, VorbisDecoder
from cadenza.player.output import AlsaOutput, ClockPacedOutput, OutputError, UnsupportedFormat
from cadenza.player.player import (
    Buffering,
    Error,
    Event,
    Player,
    PlayerState,
    PlayItem,
    StateChanged,
    TrackEnded,
    TrackStarted,
    Underrun,
)
from cadenza.player.volume import MixerVolume, SoftwareVolume

__all__ = [
    "AlsaOutput",
    "Buffering",
    "ClockPacedOutput",
    "DecodeCancelled",
    "DecodeError",
    "Error",
    "Event",
    "MixerVolume",
    "OutputError",
    "PlayItem",
    "Player",
    "PlayerState",
    "SoftwareVolume",
    "StateChanged",
    "TrackEnded",
    "TrackStarted",
    "Underrun",
    "UnsupportedFormat",
    "VorbisDecoder",
]
