"""The player against real parts: oggenc-made files, libvorbisfile, ALSA's file/null PCMs, pv.

Every capture is compared sample for sample with ``oggdec -R -b 16 -e 0 -s 1`` (vorbis-tools,
the same library). ALSA runs in this process with a private configuration (tests/alsa.py):
``default`` records into a file and consumes at once, ``paced`` consumes at the real rate
through ``pv``, and :class:`ClockPacedOutput` makes ``default`` behave like a card.
Nothing asserts a duration: tests wait for events and states (with generous timeouts).
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from alsa import AlsaSandbox, assert_same_pcm, requires_alsa, requires_pv
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
from cadenza.player.volume import SoftwareVolume
from cadenza.stream.buffer import BufferClosed, ChunkBuffer

pytestmark = [
    requires_alsa,
    pytest.mark.skipif(
        shutil.which("oggenc") is None or shutil.which("oggdec") is None,
        reason="vorbis-tools (oggenc, oggdec) is not installed",
    ),
]

WAIT = 60.0  # seconds an expected event may take on a slow machine before the test fails


@dataclass(frozen=True)
class Clip:
    path: Path
    data: bytes  # the Ogg file
    pcm: bytes  # oggdec's decode
    rate: int
    channels: int

    @property
    def frame_bytes(self) -> int:
        return 2 * self.channels

    @property
    def frames(self) -> int:
        return len(self.pcm) // self.frame_bytes

    def at_ms(self, ms: int) -> int:
        """Byte offset of the frame at ``ms``."""
        return ms * self.rate // 1000 * self.frame_bytes


def _make_clip(directory: Path, name: str, samples: np.ndarray, rate: int, quality: int) -> Clip:
    wav, ogg = directory / f"{name}.wav", directory / f"{name}.ogg"
    soundfile.write(wav, samples, rate, subtype="PCM_16")
    subprocess.run(["oggenc", "-Q", "-q", str(quality), "-o", str(ogg), str(wav)], check=True)
    decoded = subprocess.run(
        ["oggdec", "-Q", "-R", "-b", "16", "-e", "0", "-s", "1", "-o", "-", str(ogg)],
        check=True,
        capture_output=True,
    ).stdout
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    return Clip(ogg, ogg.read_bytes(), decoded, rate, channels)


def _tone(seconds: float, rate: int, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * t), 0.4 * np.sin(3 * np.pi * freq * t)], 1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    directory = tmp_path_factory.mktemp("clips")
    noise = np.random.default_rng(3).uniform(-0.5, 0.5, (3 * 44100, 2))
    return {
        "a": _make_clip(directory, "a", _tone(3.0, 44100, 440), 44100, 3),
        "b": _make_clip(directory, "b", _tone(2.0, 44100, 550), 44100, 3),
        "c48": _make_clip(directory, "c48", _tone(2.0, 48000, 330), 48000, 3),
        # Big for its length (about 190 kB): libvorbisfile reads only the start and the
        # last 64 kB at open, so a stream buffer can still be missing its middle.
        "noise": _make_clip(directory, "noise", noise, 44100, 10),
    }


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
    sandbox = AlsaSandbox(
        tmp_path / "alsa",
        # Plays 48 kHz only, and cannot convert: how a device refuses a rate here.
        extra='pcm.only48 { type plug; slave { pcm "null"; rate 48000 } '
        'rate_converter "cadenza_none" }',
    )
    sandbox.activate(monkeypatch)
    return sandbox


class Events:
    """Collects the player's events (called from its thread) and waits for them."""

    def __init__(self) -> None:
        self.items: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], what: str) -> Event:
        with self._cond:
            found: list[Event] = []

            def seen() -> bool:
                found[:] = [e for e in self.items if predicate(e)]
                return bool(found)

            if not self._cond.wait_for(seen, WAIT):
                raise AssertionError(f"no {what} within {WAIT} s; events: {self.items}")
            return found[0]

    def ended(self, key: str) -> Event:
        return self.wait_for(lambda e: e == TrackEnded(key), f"TrackEnded({key})")

    def state(self, state: PlayerState) -> Event:
        return self.wait_for(lambda e: e == StateChanged(state), f"state {state}")

    def of(self, kind: type) -> list[Event]:
        with self._cond:
            return [e for e in self.items if isinstance(e, kind)]

    def tracks(self) -> list[tuple[str, str]]:
        """Track events in order, as ("started" | "ended", key)."""
        with self._cond:
            return [
                (("started" if isinstance(e, TrackStarted) else "ended"), e.track_key)
                for e in self.items
                if isinstance(e, TrackStarted | TrackEnded)
            ]


@pytest.fixture
def events() -> Events:
    return Events()


MakePlayer = Callable[..., Player]


@pytest.fixture
def make_player(events: Events) -> Iterator[MakePlayer]:
    made: list[Player] = []

    def make(
        output: AlsaOutput | ClockPacedOutput,
        *,
        volume: SoftwareVolume | None = None,
        poll_interval: float = 0.05,
    ) -> Player:
        player = Player(output, volume=volume, on_event=events, poll_interval=poll_interval)
        made.append(player)
        return player

    yield make
    for player in made:
        player.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT} s")
        time.sleep(0.005)


def chunk_buffer(data: bytes, chunk_size: int, have: Iterable[int] = ()) -> ChunkBuffer:
    buffer = ChunkBuffer(len(data), chunk_size=chunk_size)
    for index in have:
        put(buffer, data, index)
    return buffer


def put(buffer: ChunkBuffer, data: bytes, index: int) -> None:
    size = buffer.chunk_size
    if not buffer.has_chunk(index):
        buffer.write_chunk(index, data[index * size : (index + 1) * size])


# --- decoder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "path", "buffer"])
def test_decoder_output_is_oggdecs(clips: dict[str, Clip], kind: str) -> None:
    clip = clips["a"]
    sources: dict[str, bytes | Path | ChunkBuffer] = {
        "bytes": clip.data,
        "path": clip.path,
        "buffer": chunk_buffer(clip.data, 4096, range(-(-len(clip.data) // 4096))),
    }
    source = sources[kind]
    with VorbisDecoder(source) as decoder:
        assert (decoder.rate, decoder.channels, decoder.total_frames) == (44100, 2, clip.frames)
        out = bytearray()
        buf = bytearray(4 * 1000 + 3)  # not a whole number of frames: the rest stays unused
        while frames := decoder.read_into(buf):
            out += buf[: frames * 4]
        assert decoder.eof
        assert decoder.tell() == clip.frames
    assert_same_pcm(bytes(out), clip.pcm)


def test_decoder_seek_is_sample_exact(clips: dict[str, Clip]) -> None:
    clip = clips["noise"]
    with VorbisDecoder(clip.data) as decoder:
        for frame in [clip.frames - 1, 0, 1, 4095, 44100, 100_001, clip.frames, 77]:
            decoder.seek(frame)
            assert decoder.tell() == frame
            rest = bytearray()
            while chunk := decoder.read(3000):
                rest += chunk
            assert_same_pcm(bytes(rest), clip.pcm[frame * 4 :])


def test_decoder_needs_only_what_it_asks_for(clips: dict[str, Clip]) -> None:
    """Chunks arrive only when the decoder's read waits for them (``wanted``), as the
    engine serves them: decoding completes, and the end of the file is asked for early."""
    clip = clips["noise"]
    asked: list[int] = []
    holder: list[ChunkBuffer] = []

    def serve(index: int) -> None:  # called by the waiting read, in its thread
        asked.append(index)
        threading.Timer(0.001, put, (holder[0], clip.data, index)).start()

    buffer = ChunkBuffer(len(clip.data), chunk_size=4096, on_wanted=serve)
    holder.append(buffer)
    with VorbisDecoder(buffer) as decoder:
        out = bytearray()
        while chunk := decoder.read(4096):
            out += chunk
    assert_same_pcm(bytes(out), clip.pcm)
    assert sorted(asked) == list(range(buffer.num_chunks))  # each chunk asked for once
    assert asked[0] == 0  # the headers first, then the end long before the middle
    assert asked.index(buffer.num_chunks - 1) < asked.index(buffer.num_chunks // 2)


def test_closed_buffer_aborts_a_blocked_read(clips: dict[str, Clip]) -> None:
    clip = clips["noise"]
    buffer = chunk_buffer(clip.data, 4096)
    for index in [*range(4), *range(buffer.num_chunks - 17, buffer.num_chunks)]:
        put(buffer, clip.data, index)
    waiting = threading.Event()
    decoder = VorbisDecoder(buffer, on_wait=waiting.set)

    def close_when_waiting() -> None:
        waiting.wait(WAIT)
        buffer.close()

    threading.Thread(target=close_when_waiting).start()
    with pytest.raises(BufferClosed):
        while decoder.read(4096):
            pass
    assert waiting.is_set()
    decoder.close()


def test_cancel_gives_up_a_wait_and_the_decoder_goes_on_exactly(clips: dict[str, Clip]) -> None:
    clip = clips["noise"]
    buffer = chunk_buffer(clip.data, 4096)
    for index in [*range(8), *range(buffer.num_chunks - 17, buffer.num_chunks)]:
        put(buffer, clip.data, index)
    cancel = threading.Event()
    waited = threading.Event()
    decoder = VorbisDecoder(buffer, cancel=cancel, on_wait=waited.set, poll_interval=0.01)
    out = bytearray()

    def cancel_when_waiting() -> None:
        waited.wait(WAIT)
        cancel.set()

    threading.Thread(target=cancel_when_waiting).start()
    with pytest.raises(DecodeCancelled):
        while chunk := decoder.read(1000):
            out += chunk
    assert decoder.tell() == len(out) // 4
    cancel.clear()
    for index in range(buffer.num_chunks):
        put(buffer, clip.data, index)
    while chunk := decoder.read(1000):
        out += chunk
    assert_same_pcm(bytes(out), clip.pcm)


def test_not_vorbis_is_a_decode_error_that_says_so() -> None:
    with pytest.raises(DecodeError, match="OV_ENOTVORBIS: not Vorbis data") as caught:
        VorbisDecoder(b"OggS but not really" * 500)
    assert caught.value.code == -132


# --- output ----------------------------------------------------------------------------------


def test_output_refuses_a_rate_the_device_cannot_play(alsa: AlsaSandbox) -> None:
    output = AlsaOutput("only48")
    with pytest.raises(OutputError, match="'only48' for 44100 Hz"):
        output.open(44100, 2)
    output.open(48000, 2)
    assert output.rate == 48000
    output.close()
    assert issubclass(UnsupportedFormat, OutputError)


@requires_pv
def test_alsa_file_plugin_paced_by_a_pipe_never_reports_an_underrun(alsa: AlsaSandbox) -> None:
    """What is true without a card: through the file plugin, ``null`` consumes everything
    at once, so ALSA reports an empty queue and never an xrun, even when starved; the
    capture holds every frame written and no inserted silence."""
    output = AlsaOutput("paced")
    output.open(44100, 2)
    period = bytes(range(256)) * (4096 // 256)
    for _ in range(8):
        output.write(period)
    assert output.delay_frames() == 0
    time.sleep(0.5)  # starve it: a card would underrun after its 93 ms buffer
    for _ in range(8):
        output.write(period)
    output.drain()
    output.close()
    assert output.underruns == 0
    assert alsa.capture(44100, "paced") == period * 16


class FakeCard:
    """The hardware edge: a card's PCM state machine as pyalsaaudio shows it, in the two
    ways its ``write`` has dealt with underruns (``style``): "prepare" (0.10/0.11) silently
    re-prepares a PCM found in XRUN and raises "Broken pipe" when ``snd_pcm_writei``
    itself runs into one; "return" (later) re-prepares after ``snd_pcm_writei`` failed and
    returns ``-EPIPE``."""

    PCM_PLAYBACK, PCM_NORMAL, PCM_FORMAT_S16_LE = 0, 0, 2
    PCM_STATE_SETUP, PCM_STATE_PREPARED, PCM_STATE_RUNNING, PCM_STATE_XRUN = 1, 2, 3, 4

    class ALSAAudioError(Exception):
        pass

    def __init__(self, style: str) -> None:
        self.style = style
        self.written: list[bytes] = []
        self.queued = 0
        self.status = self.PCM_STATE_PREPARED
        self.buffer = 0
        self.xrun_in_write = False  # runs dry between the state check and the write

    def PCM(self, **kwargs: int) -> FakeCard:  # alsaaudio.PCM(...)
        self.buffer = kwargs["periodsize"] * kwargs["periods"]
        self.info = lambda: {
            "rate": kwargs["rate"],
            "channels": kwargs["channels"],
            "format_name": "S16_LE",
            "period_size": kwargs["periodsize"],
            "buffer_size": self.buffer,
            "can_pause": True,
        }
        return self

    def play_out(self) -> None:
        """The card plays everything queued and runs dry."""
        self.queued = 0
        self.status = self.PCM_STATE_XRUN

    def state(self) -> int:
        return self.status

    def write(self, data: memoryview) -> int:
        if self.status == self.PCM_STATE_SETUP or (
            self.style == "prepare" and self.status == self.PCM_STATE_XRUN
        ):
            self.status = self.PCM_STATE_PREPARED
        if self.xrun_in_write:
            self.xrun_in_write = False
            self.play_out()
        if self.status == self.PCM_STATE_XRUN:  # snd_pcm_writei returns -EPIPE
            if self.style == "prepare":
                raise self.ALSAAudioError("Broken pipe [hw:0]")
            self.status = self.PCM_STATE_PREPARED
            return -32
        frames = min(len(data) // 4, self.buffer - self.queued)
        self.written.append(bytes(data[: frames * 4]))
        self.queued += frames
        self.status = self.PCM_STATE_RUNNING
        return frames

    def avail(self) -> int:
        return -32 if self.status == self.PCM_STATE_XRUN else self.buffer - self.queued

    def drop(self) -> None:
        self.queued = 0
        self.status = self.PCM_STATE_SETUP

    def drain(self) -> None:
        self.drop()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("style", ["prepare", "return"])
def test_an_underrun_is_counted_once_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    card = FakeCard(style)
    monkeypatch.setattr("cadenza.player.output._alsaaudio", lambda: card)
    output = AlsaOutput("hw:0", period_frames=256, periods=4)
    output.open(44100, 2)
    periods = [bytes([i]) * 1024 for i in range(6)]
    for period in periods[:3]:
        output.write(period)
    assert output.delay_frames() == 768
    card.play_out()  # the player stalled; the card ran dry
    assert output.delay_frames() == 0
    output.write(periods[3])
    assert output.underruns == 1
    output.write(periods[4])
    card.xrun_in_write = True
    output.write(periods[5])
    assert output.underruns == 2
    assert b"".join(card.written) == b"".join(periods)


class FakeClock:
    """A clock for ClockPacedOutput that moves only when told to (or slept on)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_clock_paced_output_behaves_like_a_card(alsa: AlsaSandbox) -> None:
    clock = FakeClock()
    output = ClockPacedOutput(AlsaOutput("default"), clock=clock, sleep=clock.sleep)
    output.open(44100, 2)
    period = output.period_frames
    assert output.buffer_frames == 4 * period
    data = [bytes([i]) * (period * 4) for i in range(12)]
    for chunk in data[:4]:  # a buffer's worth goes in at once
        output.write(chunk)
    assert clock.slept == []
    assert output.delay_frames() == 4 * period
    output.write(data[4])  # then a write waits for a period to play
    assert clock.slept == [pytest.approx(period / 44100)]
    clock.now += 2 * period / 44100
    assert output.delay_frames() == 2 * period
    output.pause()
    clock.now += 10.0
    assert output.delay_frames() == 2 * period  # paused: nothing plays
    output.resume()
    assert output.underruns == 0
    clock.now += 3 * period / 44100  # the queue runs dry
    assert output.delay_frames() == 0
    output.write(data[5])
    assert output.underruns == 1
    assert output.delay_frames() == period  # restarted with this write
    output.drain()
    assert clock.slept[-1] == pytest.approx(period / 44100)
    output.close()
    assert alsa.capture(44100) == b"".join(data[:6])


# --- player ----------------------------------------------------------------------------------


def test_plays_a_track_sample_for_sample(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    player = make_player(AlsaOutput("default"))
    player.set_volume(100)
    player.play(PlayItem("a", clips["a"].data))
    events.ended("a")
    events.state(PlayerState.STOPPED)
    assert player.position_ms() == 0 and player.current_key is None
    player.close()
    assert_same_pcm(alsa.capture(44100), clips["a"].pcm)
    assert events.tracks() == [("started", "a"), ("ended", "a")]
    assert not events.of(Error)


def test_two_queued_tracks_are_gapless(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    player = make_player(AlsaOutput("default"))
    player.play(PlayItem("a", clips["a"].path))
    player.set_next(PlayItem("b", clips["b"].data))
    events.ended("b")
    player.close()
    # No gap, no overlap: exactly one decode after the other.
    assert_same_pcm(alsa.capture(44100), clips["a"].pcm + clips["b"].pcm)
    assert events.tracks() == [("started", "a"), ("ended", "a"), ("started", "b"), ("ended", "b")]
    started = events.of(TrackStarted)
    assert isinstance(started[0], TrackStarted) and isinstance(started[1], TrackStarted)
    assert started[0].first_sample_written_at <= started[1].first_sample_written_at


def test_another_rate_reopens_the_device_at_that_rate(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    player = make_player(AlsaOutput("default"))
    player.play(PlayItem("a", clips["a"].data))
    player.set_next(PlayItem("c48", clips["c48"].data))
    events.ended("c48")
    player.close()
    assert_same_pcm(alsa.capture(44100), clips["a"].pcm)
    assert_same_pcm(alsa.capture(48000), clips["c48"].pcm)
    assert events.tracks() == [
        ("started", "a"),
        ("ended", "a"),
        ("started", "c48"),
        ("ended", "c48"),
    ]


def test_volume_50_scales_by_the_documented_db(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    player = make_player(AlsaOutput("default"), volume=SoftwareVolume(50))
    player.play(PlayItem("a", clips["a"].data))
    events.ended("a")
    player.close()
    reference = np.frombuffer(clips["a"].pcm, dtype="<i2").astype(np.float64)
    factor = 10 ** (60 * math.log10(0.55) / 20)  # level 50: -15.58 dB (volume.py)
    expected = np.clip(np.rint(reference * factor), -32768, 32767)
    captured = np.frombuffer(alsa.capture(44100), dtype="<i2")
    assert captured.shape == expected.shape
    assert np.max(np.abs(captured - expected)) <= 1  # exact but for ties at .5
    assert np.count_nonzero(captured - expected) < captured.size // 1000


def _paced(kind: str) -> AlsaOutput | ClockPacedOutput:
    return AlsaOutput("paced") if kind == "pv" else ClockPacedOutput(AlsaOutput("default"))


def _captured(alsa: AlsaSandbox, kind: str) -> bytes:
    return alsa.capture(44100, "paced" if kind == "pv" else "cap")


@pytest.mark.parametrize("kind", [pytest.param("pv", marks=requires_pv), "clock"])
def test_pause_and_resume_lose_and_repeat_nothing(
    alsa: AlsaSandbox,
    clips: dict[str, Clip],
    events: Events,
    make_player: MakePlayer,
    kind: str,
) -> None:
    clip = clips["a"]
    player = make_player(_paced(kind))
    player.play(PlayItem("a", clip.data))
    wait_until(lambda: player.position_ms() > 600, "playing past 600 ms")
    player.pause()
    events.state(PlayerState.PAUSED)
    paused_at = player.position_ms()
    assert 0 < paused_at < 3000
    time.sleep(0.3)
    assert player.position_ms() == paused_at  # nothing plays while paused
    assert player.state is PlayerState.PAUSED
    player.resume()
    wait_until(lambda: player.position_ms() > paused_at, "playing again")
    events.ended("a")
    player.close()
    assert_same_pcm(_captured(alsa, kind), clip.pcm)


def test_pause_on_a_device_that_cannot_pause_resumes_at_the_same_sample(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    """The device drops its queue on pause; the player decodes those frames again. The
    capture (what was written) shows them twice, right where playback stopped."""
    clip = clips["noise"]
    player = make_player(ClockPacedOutput(AlsaOutput("default"), can_pause=False))
    player.play(PlayItem("noise", clip.data))
    wait_until(lambda: player.position_ms() > 500, "playing past 500 ms")
    player.pause()
    events.state(PlayerState.PAUSED)
    paused_at = player.position_ms()
    player.resume()
    events.ended("noise")
    player.close()
    captured = np.frombuffer(alsa.capture(44100), dtype="<i4")  # one item per frame
    reference = np.frombuffer(clip.pcm, dtype="<i4")
    dropped = captured.size - reference.size
    assert dropped > 0  # the device had a queue, and it was played again
    written = int(np.argmax(captured[: reference.size] != reference))  # where they part
    assert_same_pcm(captured[:written].tobytes(), clip.pcm[: written * 4])
    assert_same_pcm(captured[written:].tobytes(), clip.pcm[(written - dropped) * 4 :])
    assert (written - dropped) * 1000 // 44100 == paused_at  # resumed where it was heard


def test_seek_continues_at_the_exact_sample(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    clip = clips["a"]
    player = make_player(ClockPacedOutput(AlsaOutput("default")))
    player.play(PlayItem("a", clip.data))
    wait_until(lambda: player.position_ms() > 200, "playing past 200 ms")
    player.seek(2000)
    wait_until(lambda: player.position_ms() >= 2000, "position after the seek")
    events.ended("a")
    player.close()
    captured = alsa.capture(44100)
    tail = clip.pcm[clip.at_ms(2000) :]
    head = len(captured) - len(tail)
    assert head > 0
    assert_same_pcm(captured[head:], tail)
    assert_same_pcm(captured[:head], clip.pcm[:head])


def test_seek_while_paused_then_play_from_the_start(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    clip = clips["a"]
    player = make_player(ClockPacedOutput(AlsaOutput("default")))
    player.play(PlayItem("a", clip.data), position_ms=1000)
    wait_until(lambda: player.position_ms() > 1100, "playing past 1100 ms")
    player.pause()
    player.seek(2500)
    events.state(PlayerState.PAUSED)
    wait_until(lambda: player.position_ms() == 2500, "position 2500 while paused")
    player.resume()
    events.ended("a")
    player.close()
    captured = alsa.capture(44100)
    tail = clip.pcm[clip.at_ms(2500) :]
    head = len(captured) - len(tail)
    assert_same_pcm(captured[:head], clip.pcm[clip.at_ms(1000) : clip.at_ms(1000) + head])
    assert_same_pcm(captured[head:], tail)


def test_chunks_arriving_in_random_order_while_playing(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    clip = clips["noise"]
    buffer = chunk_buffer(clip.data, 2048)
    order = list(range(1, buffer.num_chunks))
    random.Random(11).shuffle(order)
    order.insert(len(order) // 2, 0)  # the headers come late: the open has to wait

    def fill() -> None:
        for index in order:
            put(buffer, clip.data, index)
            time.sleep(0.005)

    player = make_player(AlsaOutput("default"))
    player.play(PlayItem("noise", buffer))
    threading.Thread(target=fill, daemon=True).start()
    events.ended("noise")
    player.close()
    assert_same_pcm(alsa.capture(44100), clip.pcm)
    assert Buffering("noise") in events.items
    assert StateChanged(PlayerState.BUFFERING) in events.items


@pytest.mark.parametrize("kind", [pytest.param("pv", marks=requires_pv), "clock"])
def test_starved_output_underruns_and_recovers(
    alsa: AlsaSandbox,
    clips: dict[str, Clip],
    events: Events,
    make_player: MakePlayer,
    kind: str,
) -> None:
    """A stall in the middle of the stream: the clock-paced device runs dry (an underrun,
    counted and reported) and playback goes on once the bytes are there. Through the
    file plugin ALSA itself never sees one (see the output test). Either way the capture
    is every sample in order: the file plugin records writes, not the silence."""
    clip = clips["noise"]
    buffer = chunk_buffer(clip.data, 4096)
    hole = range(buffer.num_chunks * 3 // 10, buffer.num_chunks * 5 // 10)
    for index in range(buffer.num_chunks):
        if index not in hole:
            put(buffer, clip.data, index)
    player = make_player(_paced(kind))
    player.play(PlayItem("noise", buffer))
    events.wait_for(lambda e: e == Buffering("noise"), "Buffering")
    time.sleep(0.4)  # longer than the device's buffer: it runs dry
    for index in hole:
        put(buffer, clip.data, index)
    events.ended("noise")
    player.close()
    assert_same_pcm(_captured(alsa, kind), clip.pcm)
    if kind == "clock":
        assert player.underruns >= 1
        assert events.of(Underrun)[-1] == Underrun(player.underruns)
    else:
        assert player.underruns == 0 and not events.of(Underrun)
    assert events.items.index(StateChanged(PlayerState.BUFFERING)) < events.items.index(
        TrackEnded("noise")
    )


def test_stop_interrupts_a_read_waiting_for_bytes(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    buffer = chunk_buffer(clips["a"].data, 2048)  # nothing there: the open waits
    player = make_player(AlsaOutput("default"), poll_interval=0.01)
    player.play(PlayItem("a", buffer))
    events.wait_for(lambda e: e == Buffering("a"), "Buffering")
    assert player.state is PlayerState.BUFFERING
    player.stop()
    events.state(PlayerState.STOPPED)
    player.play(PlayItem("b", clips["b"].data))  # and the player is fine afterwards
    events.ended("b")
    player.close()
    assert_same_pcm(alsa.capture(44100), clips["b"].pcm)
    assert not events.of(Error)


def test_a_broken_track_is_an_error_event(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    player = make_player(AlsaOutput("default"))
    player.play(PlayItem("junk", b"not an ogg file" * 100))
    error = events.wait_for(lambda e: isinstance(e, Error), "Error")
    assert isinstance(error, Error) and error.track_key == "junk"
    assert "OV_ENOTVORBIS" in error.message
    events.state(PlayerState.STOPPED)


def test_play_replaces_what_plays(
    alsa: AlsaSandbox, clips: dict[str, Clip], events: Events, make_player: MakePlayer
) -> None:
    player = make_player(ClockPacedOutput(AlsaOutput("default")))
    player.play(PlayItem("a", clips["a"].data))
    player.set_next(PlayItem("c48", clips["c48"].data))
    wait_until(lambda: player.position_ms() > 100, "playing past 100 ms")
    player.play(PlayItem("b", clips["b"].data))
    events.ended("b")
    wait_until(lambda: player.state is PlayerState.STOPPED, "stopped after the end")
    assert player.current_key is None
    player.close()
    captured = alsa.capture(44100)
    head = len(captured) - len(clips["b"].pcm)
    assert_same_pcm(captured[:head], clips["a"].pcm[:head])
    assert_same_pcm(captured[head:], clips["b"].pcm)
    assert alsa.capture(48000) == b""  # what was next was forgotten
    assert ("ended", "a") not in events.tracks()


def test_open_first_falls_back_to_null_paced_by_the_clock(alsa: AlsaSandbox) -> None:
    player, device = Player.open_first(["cadenza_no_such_device", "null"], period_frames=512)
    try:
        assert device == "null"
        assert isinstance(player.output, ClockPacedOutput)
    finally:
        player.close()
    with pytest.raises(OutputError, match="cadenza_no_such_device"):
        Player.open_first(["cadenza_no_such_device"])
