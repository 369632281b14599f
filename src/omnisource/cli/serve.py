"""CLI commands that use trained models: ``predict``, ``export``, ``upgrade-checkpoint``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..console import console
from .common import EXPERIMENT, friendly

EpochOpt = typer.Option("best", "--epoch", help="Epoch of a run folder: best (validation top-1), last or N.")
RunWorkspaceOpt = typer.Option(None, "--workspace", "-w",
                               help="Workspace in which a MODEL that is not a path is a run name (runs/NAME).")


def _model_path(model: Path, workspace: Optional[Path]) -> Path:
    """``model`` itself when it exists or no workspace is given, else the workspace's run of that name."""
    if model.exists() or workspace is None:
        return model
    from ..workspace import Workspace

    ws = Workspace(workspace)
    run = ws.run(str(model))
    if not run.is_dir():
        raise FileNotFoundError(f"{model}: neither a path nor a run of {ws} (runs: {', '.join(ws.run_names()) or 'none'})")
    return run


def _table(records: list[dict], top_k: int):
    from rich.table import Table

    table = Table(show_lines=False)
    table.add_column("path", overflow="fold")
    table.add_column("top-1", justify="left")
    table.add_column("p", justify="right")
    if top_k > 1:
        table.add_column(f"next {top_k - 1}", overflow="fold")
    for r in records:
        if "error" in r:
            table.add_row(r["path"], f"[red]error: {r['error']}[/]", "", *([""] if top_k > 1 else []))
            continue
        rest = ", ".join(f"{label} {p:.3f}" for label, p in zip(r["labels"][1:], r["probs"][1:]))
        table.add_row(r["path"], r["labels"][0], f"{r['probs'][0]:.3f}", *([rest] if top_k > 1 else []))
    return table


def register(app: typer.Typer) -> None:
    """Add ``omnisource predict|export|upgrade-checkpoint`` to the CLI."""

    @app.command("predict", rich_help_panel=EXPERIMENT)
    @friendly
    def predict(model: Path = typer.Argument(..., help="Run folder, epoch folder, weights file, or an exported "
                                             ".onnx / .pt2 file."),
                paths: List[str] = typer.Argument(..., help="Videos, images, frame folders, folders of those "
                                                  "(recursive) or Parquet manifests.", show_default=False),
                top_k: int = typer.Option(5, "--top-k", "-k", help="Labels per input, best first."),
                as_json: bool = typer.Option(False, "--json", help="JSON Lines {path, labels, probs} (or "
                                             "{path, error}) instead of a table."),
                views: int = typer.Option(1, "--views", help="Temporal views averaged per input."),
                epoch: str = EpochOpt,
                split: Optional[str] = typer.Option(None, "--split", help="Rows of this split only (manifests)."),
                batch_size: int = typer.Option(8, "--batch-size", help="Clips per forward pass."),
                workers: int = typer.Option(0, "--workers", help="Decoding processes."),
                device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
                workspace: Optional[Path] = RunWorkspaceOpt):
        """Classify media with a trained or exported model. Unreadable inputs get an error line and
        the rest go on; the exit status is non-zero only when nothing could be classified."""
        from ..serve.predict import load_classifier

        if top_k < 1:
            raise ValueError(f"--top-k {top_k}: must be at least 1")
        if split and not any(p.endswith(".parquet") for p in paths):
            raise ValueError("--split applies to manifests (.parquet), and no PATH is one")
        clf = load_classifier(_model_path(model, workspace), epoch, device)
        ok, records = 0, []
        for record in clf.predict_iter(paths, top_k, views, batch_size, workers, split):
            ok += "error" not in record
            if as_json:
                typer.echo(json.dumps(record))
            else:
                records.append(record)
        if not as_json:
            console.print(_table(records, min(top_k, len(clf.classes))))
            console.print(f"{ok} of {len(records)} classified by {clf.source}", highlight=False, soft_wrap=True)
        if ok == 0:
            if not as_json:
                console.print("[red]error:[/] nothing could be classified", highlight=False)
            raise typer.Exit(1)

    @app.command("export", rich_help_panel=EXPERIMENT)
    @friendly
    def export(run: Path = typer.Argument(..., help="Run folder, epoch folder or weights file."),
               fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or pt2 (torch.export)."),
               output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                     help="File to write (default RUN/export/model.<format>)."),
               epoch: str = EpochOpt,
               opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
               workspace: Optional[Path] = RunWorkspaceOpt):
        """Export a trained model (backbone + head in feature mode, the whole network in pixel mode)
        as one graph with a sidecar FILE.json (classes, input shape, preprocessing)."""
        from ..serve.export import export_model

        out, meta = export_model(_model_path(run, workspace), output, fmt, epoch, opset)
        diff = meta.get("checked_max_abs_prob_diff")
        check = (f"checked against torch: max |Δprob| {diff:.1e}" if diff is not None
                 else "not checked (onnxruntime is not installed)")
        console.print(f"export: {out} (+ {out.name}.json), input {meta['input']['layout']} "
                      f"{meta['input']['shape']}, {len(meta['classes'])} classes, epoch {meta['epoch']}; {check}",
                      highlight=False)

    @app.command("upgrade-checkpoint", rich_help_panel=EXPERIMENT)
    @friendly
    def upgrade_checkpoint(run: Path = typer.Argument(..., help="Run folder (inside its workspace) or epoch folder."),
                           workspace: Optional[Path] = RunWorkspaceOpt):
        """Write the model card (model.json) of checkpoints saved before checkpoints described
        themselves, reading the classes from the workspace around the run."""
        from ..data.manifest import atomic_write_text
        from ..train.card import legacy_card, read_card
        from ..train.checkpoint import epoch_folders

        run = _model_path(run, workspace)
        folders = list(epoch_folders(run).values()) if (run / "checkpoints").is_dir() else [run]
        if not folders or not all((f / "model.safetensors").is_file() for f in folders):
            raise FileNotFoundError(f"{run}: no checkpoint folders (model.safetensors) to upgrade")
        done = 0
        for folder in folders:
            if read_card(folder) is None:
                card = legacy_card(folder)
                card.pop("legacy", None)
                atomic_write_text(folder / "model.json", json.dumps(card, indent=1))
                done += 1
        console.print(f"upgrade-checkpoint: {done} of {len(folders)} checkpoints given a model card", highlight=False)
