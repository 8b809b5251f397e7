"""The package's shape: layers point down, modules import alone, the CLI starts light, modules stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "pipelines"
MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
)
MAX_LINES = 600
# Modules allowed to be longer, with the reason. Pure data tables only.
LONG_MODULES: dict[str, str] = {}
# Libraries only the MONAI Label environment (.venv-label) has: label_app modules that import them are
# checked there (the label CI step runs this file too), and may fail to import in the core environment.
LABEL_ONLY = ("monailabel", "fastapi")
HEAVY = ("torch", "monai", "nibabel", "SimpleITK", "highdicom", "matplotlib", "scipy", "pydicom")


def test_layers_contract_holds() -> None:
    """import-linter checks the layers written in pyproject.toml ([tool.importlinter])."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_every_module_imports_alone() -> None:
    """Each module imports in a process where no other module of the package was imported first
    (an import cycle shows up only when the cycle is entered from the right module)."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {MODULES!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'pipelines' or m.startswith('pipelines.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as err:\n"
        f"        if not (name.startswith('pipelines.label_app.') and err.name in {LABEL_ONLY!r}):\n"
        "            failed.append(f'{name}: {type(err).__name__}: {err}')\n"
        "    except Exception as err:\n"
        "        failed.append(f'{name}: {type(err).__name__}: {err}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_command_line_parses_without_heavy_imports() -> None:
    """`medseg --help` and argument parsing pay for no deep-learning or imaging library."""
    script = (
        "import sys\n"
        "from pipelines.cli.main import build_parser\n"
        "build_parser().parse_args(['segment', 'x.nii.gz', '--bundle', 'b', '--output', 'o'])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_modules_stay_small(path: Path) -> None:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES or name in LONG_MODULES, f"{name}: {lines} lines (limit {MAX_LINES}); split it"


def _calls(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                names.add(f"{func.value.id}.{func.attr}")
    return names


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


LIBRARY = [p for p in sorted(PACKAGE.rglob("*.py")) if "cli" not in p.relative_to(PACKAGE).parts[:1]]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(REPO)))
def test_library_modules_neither_print_nor_parse_arguments(path: Path) -> None:
    """Only pipelines/cli parses arguments, prints and configures logging; no importlib tricks anywhere."""
    if path.name == "__main__.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls, imports = _calls(tree), _imports(tree)
    assert "print" not in calls, f"{path}: prints; use logging"
    assert "logging.basicConfig" not in calls, f"{path}: configures logging; only the CLI does"
    assert "argparse" not in imports, f"{path}: builds an argument parser; parsers live in pipelines/cli"
    assert "importlib" not in imports, f"{path}: imports through importlib; import plainly"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("__init__.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_package_files_import_nothing(path: Path) -> None:
    """Package __init__ files hold a docstring only, so importing one module never imports its siblings.
    pipelines.transforms and pipelines.networks are the exceptions: bundle JSON names their classes as
    pipelines.transforms.X and pipelines.networks.X."""
    if path.parent.name in ("transforms", "networks"):
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = _imports(tree) - {"__future__"}
    assert not imported, f"{path}: imports {sorted(imported)}; import from the defining module instead"
