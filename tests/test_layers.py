"""The layers of docs/design.md hold: the import contracts in pyproject.toml (import-linter), and at run
time no analysis module, nor the config and the generator registry, loads TensorFlow, Keras or Ray."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import ROOT


def test_the_import_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(ROOT / ".venv" / "bin")) or shutil.which("lint-imports")
    assert lint, "lint-imports is missing: pip install -e '.[dev]'"
    done = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_analysis_the_config_and_the_registry_load_no_framework():
    code = ("import json, sys\n"
            "import analysis.report, analysis.tables, analysis.stats, analysis.plots, analysis.settle, analysis.runs\n"
            "import gan.config, gan.models, gan.contract\n"
            "gan.config.make_config('tiny', {'model.generator': 'hybrid'})\n"
            "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'ray', 'submitit') if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []


def test_no_module_of_gan_models_imports_the_package_that_collects_it():
    """A generator, the PatchGAN, the layers and the registry import their siblings only, never
    `gan.models` itself (its __init__ discovers them; an import back would run discovery from inside it).
    import-linter does not see a module importing its own parent package, so this reads the source."""
    import ast
    from conftest import ROOT
    package = ROOT / "gan" / "models"
    submodules = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir() if p.is_dir()}
    for path in sorted(package.rglob("*.py")):
        if path == package / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert all(a.name != "gan.models" for a in node.names), f"{path}: import gan.models"
            elif isinstance(node, ast.ImportFrom) and node.module == "gan.models":
                assert all(a.name in submodules for a in node.names), f"{path}: from gan.models import ..."


def test_a_command_imports_no_framework_before_it_runs():
    """Every command re-executes itself once with the allocator (gan/fastpath.py), so what it imports at
    the top is paid twice: TensorFlow, Ray and the analysis stack are imported where they are used (a
    sweep refused at its flags says so in well under a second)."""
    commands = sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if "run_main(main)" in p.read_text())
    assert {"train", "tune", "submit", "evaluate", "report", "bench"} <= set(commands), commands
    heavy = ("tensorflow", "keras", "ray", "submitit", "pandas", "scipy", "matplotlib")
    code = (f"import importlib, json, sys\nfor name in {commands!r}:\n    importlib.import_module('jobs.' + name)\n"
            f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []
