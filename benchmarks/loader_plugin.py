"""omnisource's training loader as a plugin of the peer loader harness (../shared/tools/loader-bench).

    /tmp/peers-venv/bin/pip install --no-deps -e .            # once: omnisource beside the peers
    /tmp/peers-venv/bin/pip install -c constraints.txt pyarrow  # the one dependency it adds there
    OMNISOURCE_PREPARED=/tmp/ucf6-prepared /tmp/peers-venv/bin/python \\
        ../shared/tools/loader-bench/loader_bench.py --plugin benchmarks/loader_plugin.py \\
        --configs ours,ours-torchcodec,torchcodec-tsn,mmaction2-decord,decode-only-pyav,\\
ours-prepared,ours-prepared-torchcodec,torchcodec-tsn@prepared,decode-only-pyav@prepared

Configurations (all with the product's default TSN settings, `MediaConfig()`: 8 segments, a random
frame in each, short side 128, random 112² crop, flip):
  ours, ours-torchcodec       `VideoClipDataset` over the original files (media.backend=pyav / torchcodec)
  ours-prepared[-torchcodec]  the same over the files `prepare_media` writes (short side 128, 1 s GOP)
  <peer>@prepared             a harness peer (torchcodec-tsn, mmaction2-decord, decode-only-pyav, ...)
                              reading the same prepared files, so both sides decode the same bytes
The dataset ships uint8 clips; `finalize` (main process) does the product's device step,
`transforms.to_float` then the model's first op `Normalize`, as the peers' finalize does.

Prepared files go to OMNISOURCE_PREPARED=DIR (default: a folder under the system temp dir named
after the data folder). The first configuration that needs them prepares what is missing there, on
all cores; later ones and later runs reuse them (`prepare_media` is resumable). To compare two
sets of x264 settings side by side, `ours-prepared-alt` and `<peer>@prepared-alt` read a second
folder, OMNISOURCE_PREPARED_ALT=DIR; OMNISOURCE_PREPARED_X264 / OMNISOURCE_PREPARED_ALT_X264 give a
folder's x264-params when they differ from the product's (`prepare_media` refuses a folder that
was prepared with settings other than the ones asked for, as `prepare.json` there records).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

if importlib.util.find_spec("omnisource") is None:  # a checkout that is not installed in this venv: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

_rows_cache: dict = {}


def _rows(items) -> list[dict]:
    """Manifest rows of the harness's items, with the fields `omnisource validate` records."""
    key = tuple(p for _, p, _ in items)
    if key not in _rows_cache:
        from omnisource.data import media
        from omnisource.data.manifest import new_row

        rows = []
        for _rel, path, label in items:
            info = media.probe(path)
            rows.append(new_row("target", "video", path, label=label, num_frames=info.num_frames,
                                fps=info.fps, width=info.width, height=info.height))
        _rows_cache[key] = rows
    return _rows_cache[key]


def prepared_dir(root: str, alt: bool = False) -> Path:
    env = os.environ.get("OMNISOURCE_PREPARED_ALT" if alt else "OMNISOURCE_PREPARED")
    if env:
        return Path(env)
    if alt:
        raise RuntimeError("the *@prepared-alt / ours-prepared-alt configurations need OMNISOURCE_PREPARED_ALT=DIR")
    tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"omnisource-prepared-{Path(root).name}-{tag}"


def _x264(alt: bool) -> dict | None:
    """x264 options of a prepared folder: the product's (None) unless OMNISOURCE_PREPARED[_ALT]_X264
    gives other x264-params; `prepare_media` refuses a folder prepared with other settings."""
    params = os.environ.get("OMNISOURCE_PREPARED_ALT_X264" if alt else "OMNISOURCE_PREPARED_X264")
    if params is None:
        return None
    from omnisource.data.prepare import X264

    return {**{k: v for k, v in X264.items() if k != "x264-params"}, **({"x264-params": params} if params else {})}


def _prepared_rows(root: str, items, alt: bool = False) -> list[dict]:
    key = ("prepared", alt, tuple(p for _, p, _ in items))
    if key not in _rows_cache:
        from omnisource.data.prepare import prepare_media

        out = prepared_dir(root, alt)
        print(f"# prepared files: {out}", file=sys.stderr, flush=True)
        rows = prepare_media(_rows(items), out, workers=0, progress=None, x264=_x264(alt))  # all cores
        bad = [r for r in rows if r["status"] != "ok"]
        if bad:
            raise RuntimeError(f"{len(bad)} videos failed to prepare, e.g. {bad[0]['path']}: {bad[0]['reason']}")
        _rows_cache[key] = rows
    return _rows_cache[key]


def _ours(backend: str, prepared: bool, alt: bool = False):
    def build(root, classes, items, args):
        import torch
        from omnisource import __version__
        from omnisource.config import MediaConfig
        from omnisource.data.datasets import VideoClipDataset
        from omnisource.data.transforms import to_float
        from omnisource.models.layers import IMAGENET_MEAN, IMAGENET_STD, Normalize

        cfg = MediaConfig(backend=backend)
        rows = _prepared_rows(root, items, alt) if prepared else _rows(items)
        dataset = VideoClipDataset(rows, cfg, train=True, seed=args.seed)
        normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, ndim=5)

        def finalize(batch):
            with torch.no_grad():
                x = normalize(to_float(batch[0]))  # (B, 3, T, H, W) float32
            return x, x.shape[0], x.shape[0] * x.shape[2]

        import av
        versions = {"omnisource": __version__, "av": av.__version__, "torch": torch.__version__}
        if backend == "torchcodec":
            import torchcodec
            versions["torchcodec"] = torchcodec.__version__
        return dict(dataset=dataset, collate_fn=None, finalize=finalize, versions=versions,
                    pipeline=[f"VideoClipDataset(MediaConfig(backend={backend!r}), train=True)"
                              + (f" on prepare_media output ({prepared_dir(root, alt)})" if prepared else ""),
                              f"tsn {cfg.num_segments} segments, short side {cfg.resize_short} in the decoder, "
                              f"random crop {cfg.input_size}, flip, uint8", "to_float + Normalize (main process)"])
    return build


def _harness():
    """loader_bench.py, which loaded this plugin: run as __main__, or imported as loader_bench
    (benchmarks/loader_rounds.py)."""
    for name in ("loader_bench", "__main__"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "CONFIGS") and hasattr(mod, "run_config"):
            return mod
    raise RuntimeError("the peer loader harness (loader_bench.py) is not loaded")


def _on_prepared(peer: str, alt: bool = False):
    """A harness peer reading the prepared copies of the same videos."""
    def build(root, classes, items, args):
        harness = _harness()
        rows = _prepared_rows(root, items, alt)
        # absolute "relative" paths too: mmaction2 joins them to root, which keeps an absolute one
        moved = [(r["path"], r["path"], label) for (_, _, label), r in zip(items, rows)]
        cfg = harness.CONFIGS[peer][2](root, classes, moved, args)
        cfg["pipeline"] = list(cfg.get("pipeline") or []) + [f"on prepare_media output ({prepared_dir(root, alt)})"]
        return cfg
    return build


CONFIGS = {
    "ours": ("omnisource", ["omnisource", "av"], _ours("pyav", False),
             "VideoClipDataset, PyAV forward decoder, original files"),
    "ours-torchcodec": ("omnisource", ["omnisource", "torchcodec"], _ours("torchcodec", False),
                        "VideoClipDataset, media.backend=torchcodec, original files"),
    "ours-prepared": ("omnisource", ["omnisource", "av"], _ours("pyav", True),
                      "VideoClipDataset, PyAV, on prepare_media output (short side 128, 1 s GOP)"),
    "ours-prepared-torchcodec": ("omnisource", ["omnisource", "torchcodec"], _ours("torchcodec", True),
                                 "VideoClipDataset, torchcodec, on prepare_media output"),
    "ours-prepared-alt": ("omnisource", ["omnisource", "av"], _ours("pyav", True, alt=True),
                          "VideoClipDataset, PyAV, on the prepare_media output in OMNISOURCE_PREPARED_ALT"),
}
for _peer, _mods in [("torchcodec-tsn", ["torchcodec"]), ("torchcodec-tsn-dectf", ["torchcodec"]),
                     ("mmaction2-decord", ["mmaction", "decord"]), ("decode-only-pyav", ["av"]),
                     ("decode-only-pyav-rgb", ["av"])]:
    CONFIGS[f"{_peer}@prepared"] = (f"{_peer.split('-')[0]} (prepared)", ["omnisource", *_mods], _on_prepared(_peer),
                                    f"{_peer} reading the prepare_media output of the same videos")
    CONFIGS[f"{_peer}@prepared-alt"] = (f"{_peer.split('-')[0]} (prepared, alt)", ["omnisource", *_mods],
                                        _on_prepared(_peer, alt=True),
                                        f"{_peer} reading the prepare_media output in OMNISOURCE_PREPARED_ALT")
