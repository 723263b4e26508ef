"""The robot side installs and imports without torch; the workstation side pins what must be pinned."""

import subprocess
import sys
import tomllib

from conftest import REPO

ROBOT_PACKAGES = ("runtime", "firmware_bridge")
FORBIDDEN = ("torch", "transformers", "metaworld", "mujoco", "distill", "export")

# Makes torch & co. unimportable in the process that runs it (as on a robot where they are not installed).
BLOCK = f"""
import importlib, importlib.abc, sys
FORBIDDEN = {FORBIDDEN!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"robot side imported {{name}}")
sys.meta_path.insert(0, Block())
"""

# Imports every module of the robot side under BLOCK, then checks sys.modules.
PROBE = BLOCK + f"""
import pkgutil
names = []
for package in {ROBOT_PACKAGES!r}:
    module = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        names.append(info.name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
assert not leaked, leaked
print(" ".join(names))
"""


def run_robot_side(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m runtime ARGS` with torch, transformers, Meta-World and the workstation packages
    unimportable: the command as it runs on a robot that has only `pip install .`."""
    code = BLOCK + f"import runpy; sys.argv = ['runtime', *{list(args)!r}]; runpy.run_module('runtime', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_robot_side_never_imports_torch():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported = proc.stdout.split()
    assert "runtime.action_tokenizer" in imported and "runtime.policy" in imported and "runtime.__main__" in imported


def test_the_probe_would_catch_a_torch_import(tmp_path):
    # The same probe, pointed at a package that imports torch, must fail: the test above can fail.
    pkg = tmp_path / "runtime"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("import torch\n")
    proc = subprocess.run([sys.executable, "-c", PROBE.replace("'firmware_bridge'", "")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "robot side imported torch" in proc.stderr


def test_dependencies_are_split_and_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    for heavy in ("torch", "transformers", "metaworld", "mujoco"):
        assert heavy not in base
    train = {dep.split("==")[0].split(">")[0].strip(): dep for dep in project["optional-dependencies"]["train"]}
    for pinned in ("torch", "transformers", "metaworld", "mujoco"):
        assert "==" in train[pinned], train[pinned]
