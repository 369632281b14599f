"""Loader candidates measured for docs/benchmarks.md, as a second plugin of the peer loader harness.

    /tmp/peers-venv/bin/python ../shared/tools/loader-bench/loader_bench.py \\
        --plugin benchmarks/loader_plugin.py --plugin benchmarks/loader_candidates.py \\
        --configs ours,cand-no-skip,cand-float,cand-sws-resize,cand-frame-threads,cand-before,decode-only-pyav

Each `cand-*` is `ours` (benchmarks/loader_plugin.py) with one choice switched back or changed,
by setting module attributes while its DataLoader runs (forked workers inherit them; they are
restored afterwards):
  cand-no-skip        no non-reference frame skipping (pyav_decode.SKIP_VERIFY out of reach)
  cand-float          float32 clips built in the workers (transforms.to_tensor), 4x the bytes
  cand-sws-resize     every resize inside swscale's conversion (bilinear), not only shrinks > 2x
  cand-frame-threads  2 FFmpeg frame threads per worker instead of 1
  cand-before         all of the above but the threads: the loader as it was before these changes
                      (its decoder, full-size RGB then cv2, float clips, no skipping)
  cand-seek-gap-N     seek to a keyframe only when it lies more than N frames ahead (default 4;
                      16 before)
and the same on the prepared files as `cand-prepared-*` (e.g. cand-prepared-seek-gap-4), and on
the second prepared folder (OMNISOURCE_PREPARED_ALT, see loader_plugin.py) as `cand-prepared-alt-*`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_omnisource_loader_plugin", Path(__file__).with_name("loader_plugin.py"))
_plugin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_plugin)


def _patches(name: str) -> list[tuple[object, str, object]]:
    from omnisource.data import convert, datasets, pyav_decode, transforms

    def sws_rgb(frame, size=None):
        return convert.reformat(frame, size, "rgb24", "BILINEAR").to_ndarray()

    def frame_threads(orig_init):
        def init(self, container, stream, info):
            stream.codec_context.thread_type, stream.codec_context.thread_count = "FRAME", 2
            orig_init(self, container, stream, info)
        return init

    if name.startswith("cand-seek-gap-"):
        return [(pyav_decode, "SEEK_MIN_GAP", int(name.rsplit("-", 1)[1]))]
    no_skip = [(pyav_decode, "SKIP_VERIFY", 10**9)]
    as_float = [(datasets.transforms, "to_uint8_tensor", transforms.to_tensor)]
    before = [(pyav_decode, "to_rgb", lambda frame, size=None: convert.resize_frame(frame.to_ndarray(format="rgb24"), *size)
               if size else frame.to_ndarray(format="rgb24"))]
    return {
        "cand-no-skip": no_skip,
        "cand-float": as_float,
        "cand-sws-resize": [(pyav_decode, "to_rgb", sws_rgb)],
        "cand-frame-threads": [(pyav_decode.ForwardDecoder, "__init__", frame_threads(pyav_decode.ForwardDecoder.__init__))],
        "cand-before": no_skip + as_float + before,
    }[name]


def _candidate(name: str):
    where = next((w for w in ("prepared-alt-", "prepared-", "") if name.startswith(f"cand-{w}")))
    build_ours = _plugin.CONFIGS[f"ours-{where[:-1]}" if where else "ours"][2]

    def build(root, classes, items, args):
        saved = []
        for obj, attr, value in _patches(name.replace(f"cand-{where}", "cand-")):
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)
        cfg = build_ours(root, classes, items, args)

        def cleanup():
            for obj, attr, value in reversed(saved):
                setattr(obj, attr, value)

        cfg["cleanup"] = cleanup
        cfg["pipeline"] = [*cfg["pipeline"], f"candidate: {name}"]
        return cfg
    return build


_DOCS = [("no-skip", "without non-reference skipping"),
         ("float", "with float32 clips from the workers"),
         ("sws-resize", "resizing every frame inside swscale"),
         ("frame-threads", "with 2 frame threads per worker"),
         ("before", "as before: no skipping, full-size RGB, float clips"),
         *[(f"seek-gap-{n}", f"seeking past gaps of more than {n} frames") for n in (0, 4, 8, 16, 32)]]
CONFIGS = {f"cand-{where}{key}": ("omnisource (candidate)", ["omnisource", "av"], _candidate(f"cand-{where}{key}"),
                                  f"ours{' on prepared files' if where else ''}{' (alt)' if 'alt' in where else ''} {doc}")
           for where in ("", "prepared-", "prepared-alt-") for key, doc in _DOCS}
