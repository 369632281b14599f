"""Every stage of omnisource as a Python function, from one place (DESIGN.md §2).

Each is ``stage(cfg, workspace, ...) -> Path`` (or a list of paths) over the manifests of a
workspace, and is also the CLI command named beside it; ``workspace`` is a folder path or a
:class:`~omnisource.workspace.Workspace`, ``cfg`` a :class:`~omnisource.config.Config` from
:func:`load_config` (defaults, a YAML file, ``section.field=value`` overrides)::

    from omnisource.stages import load_config, import_target, validate_target, features_stage, \\
        train_stage, evaluate_stage
    cfg = load_config(None, ["target.root=/data/videos", "train.epochs=5"])
    for stage in (import_target, validate_target, features_stage, train_stage, evaluate_stage):
        stage(cfg, "ws")

Target set: import_target (``import``), validate_target (``validate``), prepare_target
(``prepare``), features_stage (``features``), train_stage (``train``), evaluate_stage
(``evaluate``). Web data and OmniSource: import_web (``import-web``), web_features, score_stage
(``score``), select_stage (``select``), fit_motion_stage (``fit-motion``), transform_stage
(``transform``), student_stage (``student``). Pre-training: weak_labels_stage (``weak-labels``),
pretrain_stage (``pretrain``), transfer_stage (``finetune`` / ``probe``). Domain adaptation:
da_stage (``train train.method=da``). Whole experiments: run_pipeline (``run``), write_report
(``report``). Using a model: load_classifier (``predict``), export_model (``export``).
"""
from __future__ import annotations

from .config import Config, load_config
from .features.embed import embed_stage as features_stage
from .features.embed import embed_web as web_features
from .pipeline import evaluate_stage, import_target, prepare_target, train_stage, validate_target
from .report import write_report
from .runner import run_pipeline
from .select.stage import select_stage
from .serve.export import export_model
from .serve.predict import load_classifier
from .teacher.stage import score_stage
from .train.da_stage import da_stage
from .train.joint import student_stage
from .transform.stage import fit_motion_stage, transform_stage
from .weak.stage import pretrain_stage, transfer_stage, weak_labels_stage
from .web import import_web
from .workspace import Workspace

__all__ = ["Config", "Workspace", "load_config", "import_target", "validate_target", "prepare_target",
           "features_stage", "train_stage", "evaluate_stage", "import_web", "web_features", "score_stage",
           "select_stage", "fit_motion_stage", "transform_stage", "student_stage", "weak_labels_stage",
           "pretrain_stage", "transfer_stage", "da_stage", "run_pipeline", "write_report", "load_classifier",
           "export_model"]
