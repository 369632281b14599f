"""Apply a trained model: ``load_classifier(run).predict(paths)`` and ``omnisource predict``.

A classifier is built from a checkpoint's model card (``train.card``): pixel-mode runs are the
whole video network; feature-mode runs are decode → the recorded frozen backbone → the head, the
features rounded to float16 as the feature cache stores them, so a run's predictions on its
validation videos are the ones ``omnisource evaluate`` scored. Clips are decoded exactly as in
evaluation (``data.datasets.VideoClipDataset``: the card's sampler, short side, centre crop);
``views`` > 1 averages the softmax over several temporal views, as ``media.test_views`` does.
An exported ``.onnx`` file (onnxruntime) or ``.pt2`` file (torch.export) runs the same way
from its sidecar ``FILE.json``.

Records are ``{"path", "labels", "probs"}`` (top-k, best first, ``path`` as given) or
``{"path", "error"}`` for an input that could not be read; one bad input never stops the rest.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import MediaConfig
from ..data.datasets import _one_thread
from ..data.media import MediaError
from ..data.transforms import to_float
from ..train.card import CardError, card_of
from ..train.checkpoint import select_checkpoint
from .inputs import Item, expand

EXPORT_SUFFIXES = (".onnx", ".pt2")


class FeatureNet(nn.Module):
    """Feature mode as one network: ``(B, 3, T, H, W)`` in [0, 1] -> frozen backbone per frame ->
    ``(B, T, D)`` features (rounded to ``feature_dtype``, as the cache the head was trained on
    stores them) -> head logits ``(B, C)``."""

    def __init__(self, backbone: nn.Module, head: nn.Module, feature_dtype: str = "float16"):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.round_to = getattr(torch, feature_dtype) if feature_dtype != "float32" else None

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = clips.shape
        frames = clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        feats = self.backbone(frames).reshape(b, t, -1)
        if self.round_to is not None:
            feats = feats.to(self.round_to).float()
        return self.head(feats)


class WithProbs(nn.Module):
    """``clips -> (logits, softmax probabilities)``: the graph an export writes."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, clips: torch.Tensor):
        logits = self.net(clips).float()
        return logits, logits.softmax(-1)


def _backbone(spec: dict) -> nn.Module:
    from ..digest import file_sha256
    from ..models import create_backbone

    pretrained = spec.get("pretrained") or None
    if pretrained and pretrained.lower() != "imagenet":
        digest = file_sha256(pretrained)
        if digest is None:
            raise CardError(f"the frozen backbone's weights {pretrained} are missing; the head was trained on "
                            "features of that file")
        if spec.get("sha256") and digest != spec["sha256"]:
            raise CardError(f"the frozen backbone's weights {pretrained} changed since the head was trained "
                            "(sha256 differs)")
    return create_backbone(spec["name"], pretrained=pretrained)


def inference_network(card: dict, weights: Path) -> nn.Module:
    """The network of a card with its trained weights, in eval mode: clips -> logits."""
    from safetensors.torch import load_file

    from ..models import create_head, create_model

    spec, num_classes = card["model"], len(card["classes"])
    state = load_file(str(weights))
    if spec["kind"] == "head":
        kw = {"hidden_dim": spec["hidden_dim"]} if "hidden_dim" in spec else {}
        head = create_head(spec["name"], spec["in_dim"], num_classes, spec["num_frames"], spec["dropout"], **kw)
        head.load_state_dict(state)
        net = FeatureNet(_backbone(card["backbone"]), head, card["preprocessing"].get("feature_dtype", "float32"))
    elif spec["kind"] == "video":
        net = create_model(spec["name"], num_classes, pretrained=None, width=spec.get("width", 1.0),
                           dropout=spec.get("dropout", 0.5))
        net.load_state_dict(state)
    else:
        raise CardError(f"{weights}: model kind {spec['kind']!r} is not one this omnisource can rebuild")
    return net.eval()


def media_config(pre: dict, views: int = 1) -> MediaConfig:
    """The evaluation decoding of a card's preprocessing, with ``views`` temporal views."""
    if views < 1:
        raise ValueError(f"--views {views}: must be at least 1")
    return MediaConfig(num_segments=int(pre["frames"]), frame_interval=int(pre.get("frame_interval", 1)),
                       sampler=pre.get("sampler", "tsn"), input_size=int(pre["crop"]),
                       resize_short=int(pre["resize_short"]), test_views=views, test_crops=1)


class _Decoded(Dataset):
    """(index, clips (V, 3, T, H, W) or None, error) per item, decoded as evaluation decodes."""

    def __init__(self, items: list[Item], media: MediaConfig):
        from ..data.datasets import VideoClipDataset

        self.items = items
        self.clips = VideoClipDataset([it.row or {"path": "", "kind": "video", "status": "ok"} for it in items],
                                      media, False)
        self.clips.multi_view = True  # always (V, 3, T, H, W), V = 1 for one view

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        if self.items[i].error:
            return i, None, self.items[i].error
        try:
            return i, self.clips.load(i), ""
        except (MediaError, ValueError, OSError, KeyError, IndexError) as err:
            return i, None, str(err).splitlines()[0] if str(err) else type(err).__name__


def _top(probs: np.ndarray, classes: list[str], k: int) -> tuple[list[str], list[float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [classes[j] for j in order], [round(float(probs[j]), 6) for j in order]


class Classifier:
    """A trained model ready to classify media: ``classes``, ``card`` (what it is and how it reads
    its input), ``source`` (the checkpoint or exported file) and :meth:`predict`."""

    def __init__(self, run_fn, card: dict, source: Path, device: torch.device | None = None):
        self._run, self.card, self.source, self.device = run_fn, card, Path(source), device
        self.classes: list[str] = list(card["classes"])

    def probs(self, clips: torch.Tensor) -> np.ndarray:
        """Softmax probabilities ``(N, C)`` of clips ``(N, 3, T, H, W)`` in [0, 1]."""
        return self._run(clips)

    def predict_iter(self, paths: Iterable[str | Path], top_k: int = 5, views: int = 1, batch_size: int = 8,
                     workers: int = 0, split: str | None = None) -> Iterator[dict]:
        """Records in input order, as they are computed (see the module docstring)."""
        items = expand([str(p) for p in paths], split)
        dataset = _Decoded(items, media_config(self.card["preprocessing"], views))
        loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_as_is,
                            worker_init_fn=_one_thread)
        k = max(1, min(int(top_k), len(self.classes)))
        pending: list[tuple[int, torch.Tensor]] = []
        done: dict[int, dict] = {}
        nxt = 0

        def flush():
            if not pending:
                return
            clips = torch.cat([c for _, c in pending])
            probs = self.probs(to_float(clips))  # decoded as uint8, like training clips
            offset = 0
            for i, c in pending:
                p = probs[offset:offset + len(c)].mean(0)  # the mean over views
                offset += len(c)
                labels, top = _top(p, self.classes, k)
                done[i] = {"path": items[i].path, "labels": labels, "probs": top}
            pending.clear()

        for i, clips, error in loader:
            if error:
                done[i] = {"path": items[i].path, "error": error}
            else:
                pending.append((i, clips))
                if len(pending) >= batch_size:
                    flush()
            while nxt in done and not pending:
                yield done.pop(nxt)
                nxt += 1
        flush()
        while nxt in done:
            yield done.pop(nxt)
            nxt += 1

    def predict(self, paths: Iterable[str | Path] | str | Path, top_k: int = 5, views: int = 1,
                batch_size: int = 8, workers: int = 0, split: str | None = None) -> list[dict]:
        """``[{"path", "labels", "probs"} | {"path", "error"}, ...]`` for videos, images, frame
        folders, folders of those and manifests (one path or a list)."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        return list(self.predict_iter(paths, top_k, views, batch_size, workers, split))


def _as_is(sample):
    return sample


def _torch_runner(net: nn.Module, device: torch.device):
    net = net.to(device).eval()

    @torch.no_grad()
    def run(clips: torch.Tensor) -> np.ndarray:
        return net(clips.to(device)).float().softmax(-1).cpu().numpy()

    return run


def _sidecar(file: Path) -> dict:
    side = Path(str(file) + ".json")
    if not side.is_file():
        raise FileNotFoundError(f"{file}: its sidecar {side.name} (classes, input shape, preprocessing) is missing; "
                                "export writes both, keep them together")
    return json.loads(side.read_text())


def _onnx_runner(file: Path, meta: dict):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("predicting with an .onnx file needs onnxruntime: "
                           "pip install -c constraints.txt -e '.[onnx]'") from None
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    name = meta["input"]["name"]
    probs_index = [o.name for o in session.get_outputs()].index("probs")

    def run(clips: torch.Tensor) -> np.ndarray:
        return session.run(None, {name: clips.numpy().astype(np.float32)})[probs_index]

    return run


def _pt2_runner(file: Path, device: torch.device):
    net = torch.export.load(str(file)).module().to(device)

    @torch.no_grad()
    def run(clips: torch.Tensor) -> np.ndarray:
        return net(clips.to(device))[1].float().cpu().numpy()

    return run


def export_runner(file: Path, meta: dict, device: torch.device):
    """clips -> probabilities with an exported file (``meta["exported_format"]``: onnx or pt2)."""
    fmt = meta.get("exported_format", Path(file).suffix.lstrip("."))
    if fmt == "onnx":
        return _onnx_runner(file, meta)
    if fmt == "pt2":
        return _pt2_runner(file, device)
    raise ValueError(f"{file}: exported format {fmt!r} is not one predict runs (onnx, pt2)")


def load_classifier(source: str | Path, epoch: str | int = "best", device: str = "auto") -> Classifier:
    """A :class:`Classifier` from a run folder (its ``epoch``: ``best`` by default, ``last`` or
    a number), an epoch folder, a ``model.safetensors`` file, or an exported ``.onnx`` / ``.pt2``
    file (with its sidecar ``FILE.json``)."""
    from ..train.loop import resolve_device

    path = Path(source).expanduser()
    dev = resolve_device(device)
    if path.suffix in EXPORT_SUFFIXES and path.is_file():
        meta = _sidecar(path)
        return Classifier(export_runner(path, meta, dev), meta, path, dev)
    ckpt = select_checkpoint(path, epoch)
    weights = ckpt / "model.safetensors" if ckpt.is_dir() else ckpt
    card = card_of(ckpt)
    return Classifier(_torch_runner(inference_network(card, weights), dev), card, ckpt, dev)
