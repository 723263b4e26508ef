"""README.md holds exactly two set-up commands, and .ci/run runs the second one verbatim."""

import re

from conftest import REPO


def _setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    for command in commands:
        assert "\n" not in command.strip()  # one command line each
        assert "torch==2.13.0 && pip install" in command  # the CPU wheel first, or pip pulls CUDA builds
    assert "pytest" in tests and "pytest" not in main_job


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert _setup_commands()[1].strip() in ci.splitlines()
