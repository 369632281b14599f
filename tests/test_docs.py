"""The docs travel with the code: generated references in sync, links inside the repository."""
import re
from pathlib import Path

from omnisource.cli import reference

ROOT = Path(__file__).resolve().parents[1]


def test_generated_references_match_the_code(tmp_path):
    written = reference.write(tmp_path)
    assert written
    for path in written:
        committed = ROOT / "docs" / path.name
        assert committed.is_file(), f"docs/{path.name} is missing: run `python -m omnisource.cli.reference docs`"
        assert committed.read_text() == path.read_text(), \
            f"docs/{path.name} is out of date: run `python -m omnisource.cli.reference docs`"


def test_every_command_is_in_the_cli_reference():
    from typer.main import get_command

    from omnisource.cli import app

    text = (ROOT / "docs" / "cli.md").read_text()
    root = get_command(app)
    ctx = root.context_class(root, info_name="omnisource")
    assert "`--version`" in text and "`--debug`" in text  # the options before any command
    for path, cmd, _ in reference._commands(root, ctx, []):
        assert f"## omnisource {' '.join(path)}\n" in text
        first_option = next((p for p in cmd.params if getattr(p, "opts", None) and p.opts[0].startswith("-")), None)
        if first_option is not None:
            assert first_option.opts[0] in text


def _markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_and_docs_link_only_into_the_repository():
    for md in _markdown_files():
        text = md.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            assert not re.match(r"[a-z]+://", target), f"{md.name}: external link {target}"
            path = target.split("#")[0]
            if path:
                assert (md.parent / path).resolve().is_relative_to(ROOT), f"{md.name}: {target} leaves the repository"
                assert (md.parent / path).exists(), f"{md.name}: {target} does not exist"


def test_no_doc_or_docstring_points_outside_the_repository():
    files = [*_markdown_files(), *sorted((ROOT / "src").rglob("*.py"))]
    for f in files:
        text = f.read_text()
        for needle in ("DESIGN.md", "shared/DESIGN"):
            assert needle not in text, f"{f.relative_to(ROOT)} cites {needle}, which a clone does not have"
