"""Imports flow one way: CLI -> stages -> methods/data/models -> config/workspace. The command line
sits on top, so no module outside ``omnisource/cli/`` imports it (the package's ``__main__``, the
program's entry point, excepted); a stage that needs a command adds it under ``cli/``."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "omnisource"


def imported_modules(path: Path, package_root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved, ``from X
    import name`` also as ``X.name`` (``name`` may be a module) and ``importlib.import_module("...")``
    with a literal name."""
    rel = path.relative_to(package_root.parent).with_suffix("")
    package = list(rel.parts[:-1])  # a module's package; an __init__'s is its own folder, the same
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            name = node.args[0].value
            if name.startswith(".") and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                name = node.args[1].value + name
            found.append((node.lineno, name))
    return found


def cli_imports_from_below(package_root: Path = PACKAGE) -> list[str]:
    cli = package_root / "cli"
    bad = {}
    for path in sorted(package_root.rglob("*.py")):
        if cli in path.parents or path == package_root / "__main__.py":
            continue
        for line, name in imported_modules(path, package_root):
            if name == "omnisource.cli" or name.startswith("omnisource.cli."):
                bad.setdefault(f"{path.relative_to(package_root)}:{line}", name)  # one per import
    return [f"{where} imports {name}" for where, name in bad.items()]


def test_the_import_resolver_sees_every_spelling(tmp_path):
    pkg = tmp_path / "omnisource"
    (pkg / "report").mkdir(parents=True)
    (pkg / "report" / "stage.py").write_text(
        "import omnisource.cli\nfrom ..cli.common import friendly\nfrom .. import cli\nfrom . import figures\n"
        "def f():\n    import importlib\n    importlib.import_module('.cli.common', 'omnisource')\n")
    (pkg / "__init__.py").write_text("from .cli import app\n")
    (pkg / "__main__.py").write_text("from .cli.commands import main\n")
    assert cli_imports_from_below(pkg) == [
        "__init__.py:1 imports omnisource.cli", "report/stage.py:1 imports omnisource.cli",
        "report/stage.py:2 imports omnisource.cli.common", "report/stage.py:3 imports omnisource.cli",
        "report/stage.py:7 imports omnisource.cli.common"]
    assert (4, "omnisource.report.figures") in imported_modules(pkg / "report" / "stage.py", pkg)


def test_no_module_below_the_command_line_imports_it():
    assert PACKAGE.is_dir() and len(list(PACKAGE.rglob("*.py"))) > 50
    assert cli_imports_from_below() == []
