"""The PyAV forward decoder: TSN clips and spans of a video decoded forward once.

Why it looks the way it does (docs/concepts.md and docs/benchmarks.md, measured on 2 cores):
- seeking per frame collapses to ~6 fps on long-GOP files, so a clip is decoded forward once, with
  one decoder thread (loader workers supply the parallelism), seeking only when a keyframe lies
  between the current position and the next wanted frame;
- a TSN clip of a long-GOP file costs about one whole-video decode, so the decoder also skips the
  non-reference frames it is not asked for (`skip_frame=NONREF` per packet; no other frame depends
  on them), once the file's timestamps have proven to index frames exactly;
- converting a frame with a fresh swscale context costs ~10x the conversion itself, so one
  `VideoReformatter` per process converts (and, when asked, resizes) the wanted frames (`convert`).

Frame index i = the i-th frame a sequential decode yields (as in torchcodec and decord), not a pts.
"""
from __future__ import annotations

import bisect
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np

from .containers import (BAD_VIDEO_ERRORS, MAX_PIXELS, MediaError, MediaInfo, check_file, check_size, open_video,
                         short_side_size, video_info)
from .convert import to_rgb

# frames: seeking flushes the decoder, worth it only past this many skipped frames. 4: on the 1 s
# GOPs of `prepare` output, 1.09x the clips per CPU second of 16 (docs/benchmarks.md); on long-GOP
# originals a keyframe is rarely that close, so it makes no difference there.
SEEK_MIN_GAP = 4
BLIND_SEEK_S = 5.0  # seconds: gap that justifies a seek when the index shows no keyframes
SKIP_VERIFY = 8  # frames whose pts must match their count before non-reference frames are skipped


def decode_pyav(path: str | Path, wanted: Sequence[int], max_pixels: int | None = MAX_PIXELS,
                stats: dict | None = None, short_side: int | None = None,
                skip_nonref: bool = True) -> tuple[dict[int, np.ndarray], int]:
    """Decode forward once: ({wanted index: RGB frame}, index of the last decoded frame). Seeks
    only to a keyframe more than SEEK_MIN_GAP frames ahead; skips unwanted non-reference frames
    (skip_nonref); `stats` gets "seeks", "decoded" and "skipped" (frames never decoded)."""
    stats = stats if stats is not None else {}
    stats.update(seeks=0, decoded=0, skipped=0)
    with decoder(Path(path), max_pixels) as dec:
        size = short_side_size(dec.info.width, dec.info.height, short_side) if short_side else None
        return dec.collect(sorted({int(i) for i in wanted}), stats, size, skip_nonref)


@contextmanager
def decoder(path: Path, max_pixels) -> Iterator["ForwardDecoder"]:
    """A ForwardDecoder on the first video stream; one decoder thread (workers parallelise)."""
    with open_video(check_file(path)) as (container, stream):
        info = video_info(container, stream)
        check_size(info, max_pixels)
        stream.codec_context.thread_count = 1
        dec = ForwardDecoder(container, stream, info)
        try:
            yield dec
        except BAD_VIDEO_ERRORS as e:
            raise MediaError(f"decode error: {e}") from None
        finally:
            dec.close()


def iter_video(path: str | Path, start: int = 0, stop: int | None = None,
               max_pixels: int | None = MAX_PIXELS) -> Iterator[tuple[int, "av.VideoFrame"]]:
    """(index, av.VideoFrame) for frames start..stop-1 in order, seeking once to the keyframe before
    `start` when one exists (for re-encoding spans of long videos). Same indices as read_frames."""
    with decoder(Path(path), max_pixels) as dec:
        dec.maybe_seek(start)
        while True:
            idx, frame = dec.next()
            if frame is None or (stop is not None and idx >= stop):
                break
            if idx >= start:
                yield idx, frame
        if dec.pos < 0:
            raise MediaError(f"truncated: {dec.error or 'no decodable frames'}")


class ForwardDecoder:
    """Forward decoding with rare seeks: to the keyframe before a target when the demuxer index
    shows one more than SEEK_MIN_GAP frames ahead, or blindly (no usable index, e.g. Matroska
    before its cues are read) when the gap exceeds BLIND_SEEK_S seconds.

    Frame index = number of frames decoded before it (what `stream.frames` counts and what a
    sequential decode yields). pts are trusted only once they agree with that count (up to a
    constant offset): packed B-frames in AVI scramble them. Skipping non-reference frames breaks
    the count, so it starts only after SKIP_VERIFY frames agreed, and then every packet's pts must
    fall on the frame grid with no gap or repeat; the first that does not restarts the decode
    from the top without skipping."""

    def __init__(self, container, stream, info: MediaInfo):
        self.container, self.stream, self.info = container, stream, info
        self.start = stream.start_time or 0
        rate = float(stream.time_base * info.fps) if stream.time_base and info.fps > 0 else 0.0
        self.tb_fps, self.num_frames, self.fps = rate, info.num_frames, info.fps
        self.keyframes = None  # ([sorted indices], {dts: index}), read once a long gap appears
        self.can_seek, self.last_seek, self.seek_target = rate > 0, -1, None
        self.pos, self.agree, self.pts_bad, self.offset, self.error = -1, 0, False, None, None
        # non-reference skipping: wanted set (None = off), pts seen (on the grid, minus offset)
        self.want, self.seen, self.skipping, self.skip_failed, self.skipped = None, set(), False, False, 0
        self._restart(seek=False)

    def collect(self, wanted: list[int], stats: dict, size=None,
                skip_nonref: bool = True) -> tuple[dict[int, np.ndarray], int]:
        """RGB frames (resized to size=(w, h)) for sorted unique `wanted`; a target skipped over
        (pts gap) takes the frame shown at that time, targets past the end the last decodable one."""
        end = self.num_frames - 1
        if skip_nonref and self.info.exact and self.tb_fps > 0:
            self.want = frozenset(min(w, end) for w in wanted)  # past the end: the last frame stands in
        got, rgb, prev, k = {}, {}, None, 0
        while k < len(wanted):
            if self.maybe_seek(wanted[k]):
                prev, stats["seeks"] = None, stats["seeks"] + 1
            idx, frame = self.next()
            if frame is None:
                if self.skip_mode and self.pos < end:  # ended before the announced end: in full
                    self._fail_skip()
                    prev = None
                    continue
                break
            stats["decoded"] += 1
            if idx < 0:  # a seek or a skip went wrong: restarted from the top
                prev = None
                continue
            while k < len(wanted) and wanted[k] <= idx:
                src_idx, src = (idx, frame) if (wanted[k] == idx or prev is None) else prev
                if src_idx not in rgb:
                    rgb[src_idx] = to_rgb(src, size)
                got[wanted[k]], k = rgb[src_idx], k + 1
            prev = (idx, frame)
        stats["skipped"] += self.skipped
        if not got and prev is None:
            raise MediaError(f"truncated: corrupt data: {self.error}" if self.error
                             else "truncated: no decodable frames")
        if k < len(wanted):
            last = to_rgb(prev[1], size) if prev is not None else rgb[max(rgb)]
            got.update({t: last for t in wanted[k:]})
        return got, self.pos

    def _restart(self, seek: bool = True) -> None:
        if seek:
            self.container.seek(self.start, stream=self.stream, backward=True)
        self._new_frames()
        self.pos, self.seek_target = -1, None

    def _new_frames(self) -> None:
        self.close()
        self.frames, self.first_dts, self.skip_mode = self._demux(), None, False

    def close(self) -> None:
        """Finish the demux generator while the container is open: left to the garbage collector
        it would run after container.close() (crashes, or hangs forked DataLoader workers)."""
        if getattr(self, "frames", None) is not None:
            self.frames.close()
            self.frames = None

    def _grid(self, pts) -> int | None:
        """The frame index pts shows on the stream's frame grid (before the pts/count offset),
        None when it falls between grid points (variable frame rate)."""
        x = (pts - self.start) * self.tb_fps
        i = round(x)
        return i if abs(x - i) < 0.25 else None

    def _can_skip(self) -> bool:
        return (self.agree >= SKIP_VERIFY and self.offset is not None and self.seek_target is None
                and not self.pts_bad and not self.skip_failed and self.want is not None)

    def _demux(self):
        cc, want = self.stream.codec_context, self.want
        for packet in self.container.demux(self.stream):
            if self.first_dts is None and packet.size:
                self.first_dts = (packet.dts,)
            skip = False
            if want is not None and packet.pts is not None and not packet.is_discard:
                i = self._grid(packet.pts)
                if i is not None:
                    self.seen.add(i)
                    skip = i - (self.offset or 0) not in want and self._can_skip()
            if skip != self.skipping:
                cc.skip_frame, self.skipping = ("NONREF" if skip else "DEFAULT"), skip
            self.skip_mode = self.skip_mode or skip
            yield from packet.decode()

    def _fail_skip(self) -> None:
        """Timestamps cannot index frames once some are skipped: decode again from the top in full."""
        self.skip_failed = True
        if self.skipping:
            self.stream.codec_context.skip_frame, self.skipping = "DEFAULT", False
        self.can_seek = False
        self._restart()

    def maybe_seek(self, target: int) -> bool:
        gap = target - self.pos
        if not self.can_seek or gap <= SEEK_MIN_GAP:
            return False
        self.keyframes = self.keyframes or _keyframes(self.stream, self.num_frames, self.start, self.tb_fps)
        positions = self.keyframes[0]
        kf = positions[bisect.bisect_right(positions, target) - 1] if positions else -1
        if len(positions) < 2:  # no usable index: blind seek on long gaps only
            kf = target if gap > BLIND_SEEK_S * self.fps else -1
        if kf <= self.pos + SEEK_MIN_GAP or kf <= self.last_seek:  # never the same place twice
            return False
        try:  # by pts (what FFmpeg's demuxers compare against), landing on the keyframe <= kf
            self.container.seek(int(round(self.start + kf / self.tb_fps)), stream=self.stream,
                                backward=True)
        except av.FFmpegError:  # e.g. EPERM past the end: keep decoding forward
            self.can_seek = False
            return False
        self._new_frames()
        self.last_seek, self.seek_target = kf, target
        return True

    def next(self):
        """(index, frame); (None, None) at the end; index -1 after restarting from the top."""
        try:
            frame = next(self.frames, None)
        except av.FFmpegError as e:  # corrupt data mid-stream: keep what decoded so far
            frame, self.error = None, e
        if frame is None:
            return None, None
        if self.skip_mode and self.seek_target is None:  # frames may be skipped: only pts index
            grid = self._grid(frame.pts) if frame.pts is not None else None
            idx = None if grid is None else grid - self.offset
            if idx is None or idx <= self.pos or (idx > self.pos + 1 and not all(
                    j + self.offset in self.seen for j in range(self.pos + 1, idx))):
                self._fail_skip()  # off the grid, backwards, or a gap no packet fills
                return -1, frame
            self.skipped += idx - self.pos - 1
            self.pos = idx
            return idx, frame
        pts_idx = None
        if frame.pts is not None and self.tb_fps:
            pts_idx = int(round((frame.pts - self.start) * self.tb_fps))
        if self.seek_target is None:
            idx = self.pos + 1
            if pts_idx is not None:  # pts may sit a constant offset from the count (AVI + B-frames)
                self.offset = pts_idx - idx if self.offset is None else self.offset
                self.agree, self.pts_bad = self.agree + 1, self.pts_bad or pts_idx - idx != self.offset
        else:
            pts_idx = None if pts_idx is None else pts_idx - (self.offset or 0)
            idx = self._landed(pts_idx)
            if idx is None or idx > self.seek_target:  # unsure or overshot: decode from the top
                self.can_seek = False
                self._restart()
                return -1, frame
            self.seek_target = None
        self.pos = idx
        return idx, frame

    def _landed(self, pts_idx: int | None) -> int | None:
        """Index of the first frame after a seek: the keyframe's position in the index (exact for
        closed GOPs) checked against pts (exact for open GOPs when pts are sane)."""
        kf_pos = self.keyframes[1].get(self.first_dts[0]) if self.first_dts else None
        if pts_idx is None or kf_pos == pts_idx:
            return kf_pos
        if kf_pos is None:
            return None if self.pts_bad else pts_idx
        if self.pts_bad:
            return kf_pos
        return pts_idx if self.agree >= 2 else None


def _keyframes(stream, num_frames: int, start: int, tb_fps: float) -> tuple[list[int], dict]:
    """Keyframe indices from the demuxer index, and {dts: index} to recognise where a seek landed.
    When every packet is indexed (MP4, AVI), a closed-GOP keyframe's display index is its position
    in decode order, exact even with B-frames; a sparse index (Matroska cues) is read by timestamp."""
    try:
        entries = [e for e in stream.index_entries if not e.is_discard]
    except Exception:  # noqa: BLE001 - older PyAV without index_entries: no seeking
        entries = []
    full = num_frames > 0 and len(entries) >= 0.9 * num_frames
    by_dts = {e.timestamp: pos if full else max(int(round((e.timestamp - start) * tb_fps)), 0)
              for pos, e in enumerate(entries) if e.is_keyframe}
    return sorted(set(by_dts.values())), by_dts
