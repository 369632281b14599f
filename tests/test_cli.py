"""The command line itself: entry points, one CLI shape, errors, logs."""
import subprocess
import sys
from pathlib import Path


def test_python_dash_m_omnisource_runs_the_cli():
    for module in ("omnisource", "omnisource.cli"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "import-web" in out.stdout and "student" in out.stdout


def _folders(root, classes=("a", "b"), per_class=2):
    from media_factory import write_video

    for c in classes:
        for i in range(per_class):
            write_video(root / c / f"v_{c}_g0{i + 1}_c01.mp4", 4, size=(48, 40))
    return root


def test_overrides_apply_to_one_command_and_config_set_persists(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from omnisource.cli import app

    runner = CliRunner()
    ws, data = tmp_path / "ws", _folders(tmp_path / "videos")
    bad = runner.invoke(app, ["import", "-w", str(ws), f"target.root={tmp_path / 'nothing'}"])
    assert bad.exit_code == 2 and not (ws / "config.yaml").exists()  # a failed first command leaves no base
    ok = runner.invoke(app, ["import", "-w", str(ws), f"target.root={data}", "target.val_groups=['02']"])
    assert ok.exit_code == 0, ok.output
    base = (ws / "config.yaml").read_text()
    assert yaml.safe_load(base)["target"]["root"] == str(data)  # the first command's config is the base
    again = runner.invoke(app, ["import", "-w", str(ws), "target.per_class=1", "train.epochs=7"])
    assert again.exit_code == 0 and (ws / "config.yaml").read_text() == base  # not sticky
    shown = runner.invoke(app, ["config", "show", "-w", str(ws), "train.lr=0.5"])
    assert "root: " + str(data) in shown.output and "lr: 0.5" in shown.output and "epochs: 10" in shown.output
    assert runner.invoke(app, ["config", "set", "-w", str(ws), "train.epochs=7"]).exit_code == 0
    assert yaml.safe_load((ws / "config.yaml").read_text())["train"]["epochs"] == 7
    assert "epochs: 7" in runner.invoke(app, ["config", "show", "-w", str(ws)]).output


def test_config_show_doc_lists_every_key():
    out = subprocess.run([sys.executable, "-m", "omnisource", "config", "show", "--doc"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("web[i].batch_ratio") and "|B_A| = batch_ratio" in line for line in lines)
    assert any(line.startswith("train.epochs ") and "int = 10" in line for line in lines)


def _leaf_commands():
    """Paths of every command of the app (``["clean", "validate"]``, ...)."""
    import typer

    from omnisource.cli import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [path]
        return [p for name, sub in subs.items() for p in walk(sub, [*path, name])]

    return walk(typer.main.get_command(app), [])


def test_every_command_takes_dash_w_and_none_makes_a_default_workspace(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from omnisource.cli import app

    runner = CliRunner()
    commands = _leaf_commands()
    assert len(commands) >= 25 and ["clean", "dedup"] in commands and ["dedup"] not in commands  # dedup once
    for path in commands:
        out = runner.invoke(app, [*path, "--help"])
        assert out.exit_code == 0 and "--workspace" in out.output, path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "urls.tsv").write_text("http://127.0.0.1:9/x.jpg\tq\n")
    for args in (["queries", "--class", "archery"], ["download", "urls.tsv"], ["clean", "validate"], ["train"],
                 ["report"]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and "no workspace given: pass -w/--workspace" in out.output, (args, out.output)
    assert not (tmp_path / "workspace").exists()
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["queries", "-w", str(ws), "--class", "horse riding"]).exit_code == 0
    for args in (["report", str(ws)], ["report", "-w", str(ws)]):  # positional kept as an alias
        out = runner.invoke(app, args)
        assert out.exit_code == 0 and "report:" in out.output, out.output


def test_help_lists_commands_in_pipeline_order():
    out = subprocess.run([sys.executable, "-m", "omnisource", "--help"], capture_output=True, text=True,
                         env={**__import__("os").environ, "COLUMNS": "100"}).stdout
    order = ["import ", "validate ", "features ", "queries ", "download ", "import-web ", "clean ", "train ",
             "evaluate ", "score ", "select ", "transform ", "student ", "weak-labels ", "run ", "report "]
    positions = [out.index("│ " + name) for name in order]
    assert positions == sorted(positions)
    assert out.index("Target set") < out.index("Web data") < out.index("Whole experiments")


def test_expected_errors_are_one_line_bugs_say_so_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    import numpy as np
    from typer.testing import CliRunner

    from omnisource import pipeline
    from omnisource.cli import app

    runner = CliRunner()
    ws = str(tmp_path / "ws")
    user = runner.invoke(app, ["train", "-w", ws, "train.optimizer=adam"])
    assert user.exit_code == 2 and user.output.startswith("error: train.optimizer")
    assert len(user.output.strip().splitlines()) == 1 and "internal" not in user.output
    traced = runner.invoke(app, ["--debug", "train", "-w", ws, "train.optimizer=adam"])
    assert type(traced.exception).__name__ == "ConfigError"  # raised, so the traceback shows

    def buggy(cfg, workspace):  # a real bug inside numpy
        return np.linalg.inv(np.zeros((2, 2)))

    monkeypatch.setattr(pipeline, "import_target", buggy)
    bug = runner.invoke(app, ["import", "-w", ws])
    assert bug.exit_code == 1 and "internal error: LinAlgError" in bug.output and "--debug" in bug.output
    assert not bug.output.startswith("error:")
    assert isinstance(runner.invoke(app, ["--debug", "import", "-w", ws]).exception, np.linalg.LinAlgError)
    out = subprocess.run([sys.executable, "-m", "omnisource", "train", "-w", ws, "train.optimizer=adam", "--debug"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" in out.stderr and "ConfigError" in out.stderr  # --debug after too


def test_importing_omnisource_leaves_opencv_threads_alone():
    code = "import cv2; n = cv2.getNumThreads(); import omnisource.cli.commands; print(n, cv2.getNumThreads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    before, after = out.stdout.split()
    assert before == after, out.stderr


def test_every_command_logs_to_the_workspace_without_wrapping(tmp_path):
    from typer.testing import CliRunner

    from omnisource.cli import app

    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "videos"
    data = _folders(deep)
    ws = tmp_path / "ws"
    out = CliRunner().invoke(app, ["import", "-w", str(ws), f"target.root={data}", "target.val_groups=['02']"])
    line = next(x for x in out.output.splitlines() if x.startswith("import: "))
    assert line.endswith(str(ws / "manifests" / "target.parquet")) and len(line) > 120  # one line, not wrapped
    CliRunner().invoke(app, ["train", "-w", str(ws), "train.optimizer=adam"])
    log = (ws / "logs" / "omnisource.log").read_text().splitlines()
    assert any(x.endswith(line) for x in log) and any("$ " in x and " import workspace=" in x for x in log)
    assert any("error: train.optimizer" in x for x in log)
    assert all(x[:4].isdigit() and x[4] == "-" for x in log)  # every line timestamped


def test_absolute_paths_in_manifests_whatever_the_current_directory(tmp_path, monkeypatch):
    """Paths were stored relative to where `import` ran: run from elsewhere, good files were
    marked `corrupt: missing file`."""
    from typer.testing import CliRunner

    from omnisource.cli import app
    from omnisource.data.manifest import read_manifest
    from media_factory import write_video

    for c in ("a", "b"):
        for g in (1, 2):
            write_video(tmp_path / "data" / c / f"v_{c}_g0{g}_c01.mp4", 6, size=(48, 40))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["import", "-w", "ws", "target.root=data", "target.val_groups=['02']"])  # relative
    assert out.exit_code == 0, out.output
    monkeypatch.chdir(tmp_path / "elsewhere")
    out = runner.invoke(app, ["validate", "-w", "../ws"])
    assert out.exit_code == 0 and "validate: 4 ok ->" in out.output, out.output
    rows = read_manifest(tmp_path / "ws" / "manifests" / "target.validated.parquet").rows
    assert all(r["path"].startswith(str(tmp_path / "data")) for r in rows)
    bad = runner.invoke(app, ["import", "-w", str(tmp_path / "ws2"), "target.root=../data/a"])  # no class folders
    assert bad.exit_code == 2
    for c in ("a", "b"):  # 32x24: below media.min_size
        write_video(tmp_path / "tiny" / c / f"v_{c}_g01_c01.mp4", 4)
    assert runner.invoke(app, ["import", "-w", str(tmp_path / "ws3"), f"target.root={tmp_path / 'tiny'}"]).exit_code == 0
    out = runner.invoke(app, ["validate", "-w", str(tmp_path / "ws3")])
    assert out.exit_code == 2 and "none of the 2 target files is usable" in out.output  # not "0 ok" and exit 0


def _cli(args):
    return subprocess.run([sys.executable, "-m", "omnisource", *args], capture_output=True, text=True)


def _one_line(out, message):
    assert out.returncode == 2 and message in out.stdout, (out.stdout, out.stderr)
    assert "Traceback" not in out.stdout + out.stderr and len(out.stdout.strip().splitlines()) == 1


def test_unusable_workspaces_fail_with_one_line(tmp_path, monkeypatch):
    import os

    a_file = tmp_path / "ws-is-a-file"
    a_file.write_text("x")
    data = _folders(tmp_path / "videos")
    _one_line(_cli(["import", "-w", str(a_file), f"target.root={data}"]), "is a file, not a workspace folder")
    _one_line(_cli(["import", "-w", str(a_file / "ws"), f"target.root={data}"]), "cannot create the workspace")
    ro_parent, ro_ws = tmp_path / "ro", tmp_path / "ro-ws"
    ro_parent.mkdir(mode=0o555)
    ro_ws.mkdir(mode=0o555)
    try:
        if os.geteuid() != 0:
            _one_line(_cli(["import", "-w", str(ro_parent / "ws"), f"target.root={data}"]),
                      "cannot create the workspace")
            _one_line(_cli(["import", "-w", str(ro_ws), f"target.root={data}"]), "is not writable")
            return
        # root ignores permissions: let the OS calls fail as they do for everyone else.
        from typer.testing import CliRunner

        from omnisource import workspace
        from omnisource.cli import app

        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self.parent == ro_parent:
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
        monkeypatch.setattr(workspace, "writable", lambda p: Path(p) != ro_ws)
        for ws, message in ((ro_parent / "ws", "cannot create the workspace"), (ro_ws, "is not writable")):
            out = CliRunner().invoke(app, ["import", "-w", str(ws), f"target.root={data}"])
            assert out.exit_code == 2 and message in out.output and len(out.output.strip().splitlines()) == 1
    finally:
        ro_parent.chmod(0o755)
        ro_ws.chmod(0o755)


def test_files_honour_the_umask(tmp_path):
    import os
    import stat

    from typer.testing import CliRunner

    from omnisource.cli import app

    data = _folders(tmp_path / "videos")
    old = os.umask(0o022)
    try:
        out = CliRunner().invoke(app, ["import", "-w", str(tmp_path / "ws"), f"target.root={data}"])
        assert out.exit_code == 0, out.output
        os.umask(0o002)
        CliRunner().invoke(app, ["import", "-w", str(tmp_path / "ws2"), f"target.root={data}"])
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "ws" / "manifests" / "target.parquet") == 0o644  # was 0600 (mkstemp)
    assert mode(tmp_path / "ws" / "config.yaml") == 0o644 and mode(tmp_path / "ws" / ".stages" / "import.json") == 0o644
    assert mode(tmp_path / "ws2" / "manifests" / "target.parquet") == 0o664


def test_checkpoint_folders_honour_the_umask(tmp_path):
    import os
    import stat

    import torch

    from omnisource.train.checkpoint import save_checkpoint

    model = torch.nn.Linear(2, 2)
    old = os.umask(0o022)
    try:
        ckpt = save_checkpoint(tmp_path / "run", 1, model, torch.optim.SGD(model.parameters(), lr=0.1), {}, "")
    finally:
        os.umask(old)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755 and stat.S_IMODE((ckpt / "state.pt").stat().st_mode) == 0o644
