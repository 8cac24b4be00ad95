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
