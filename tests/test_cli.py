"""Every package's command line: --help lists its commands; user errors are one line, no traceback."""

import json

import pytest

from conftest import HAVE_SIM, needs_sim, run_module

COMMANDS = {
    "distill": ["tasks", "record", "inspect", "tokenizer", "evaluate", "train-teacher", "student", "card"],
    "runtime": ["tokenizer", "run", "serve", "netem-proxy", "cloud-eval"],
    "firmware_bridge": ["ports", "emulate"],
    "export": ["bundle", "verify", "doctor", "trt-check", "tensorrt"],
    "benchmarks": ["machine", "serial_rtt", "decode-speed", "latency", "quality", "scaling", "all", "report"],
}


@pytest.mark.parametrize("package", sorted(COMMANDS))
def test_help_lists_commands(package):
    if package == "distill" and not HAVE_SIM:
        pytest.skip("distill needs the train extra")
    proc = run_module(package, "--help")
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS[package]:
        assert command in proc.stdout
        sub = run_module(package, command, "--help")
        assert sub.returncode == 0 and "Example" in sub.stdout, (package, command)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@needs_sim
def test_tokenizer_built_from_dataset_round_trips(tiny_dataset, tmp_path):
    out = tmp_path / "tok.json"
    proc = run_module("distill", "tokenizer", "--dataset", str(tiny_dataset), "--scheme", "last",
                      "--vocab-size", "1000", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    tok = json.loads(out.read_text())
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert tok["low"] == pytest.approx(manifest["action"]["p01"]) and tok["high"] == pytest.approx(manifest["action"]["p99"])
    assert tok["table"]["ids"] == list(range(744, 1000))
    shown = run_module("runtime", "tokenizer", str(out), "--encode", "0,0,0,0,1")
    assert shown.returncode == 0 and "ids 744..999" in shown.stdout


@needs_sim
@pytest.mark.parametrize(
    "ids, vocab, needle",
    [
        (list(range(255)), "1000", "255"),  # one id short
        (list(range(900, 1156)), "1000", "1000"),  # ids past the vocabulary
        ([-1] + list(range(1, 256)), "1000", "-1"),  # negative id
        (list(range(256)), None, "--vocab-size"),  # plain list without the vocabulary size
    ],
)
def test_bad_id_table_is_refused_and_nothing_written(tiny_dataset, tmp_path, ids, vocab, needle):
    table = tmp_path / "ids.json"
    table.write_text(json.dumps(ids))
    out = tmp_path / "tok.json"
    args = ["distill", "tokenizer", "--dataset", str(tiny_dataset), "--ids", str(table), "--out", str(out)]
    if vocab:
        args += ["--vocab-size", vocab]
    _one_line_error(run_module(*args), needle)
    assert not out.exists()


def test_damaged_tokenizer_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "tok.json"
    path.write_text('{"format": "vla-edge-action-tokenizer", "version": 1, "names": [')
    _one_line_error(run_module("runtime", "tokenizer", str(path)), "tok.json")
    _one_line_error(run_module("runtime", "tokenizer", str(tmp_path / "missing.json")), "does not exist")


@pytest.mark.parametrize("args, needles", [
    (["--camera", "0", "--instruction", "open the drawer"], ["needs --port", "/dev/ttyACM0", "firmware_bridge ports"]),
    (["--sim", "reach", "--port", "/dev/pts/9"], ["add --bench HOST:PORT", "emulate --pty --arm metaworld"]),
    (["--sim", "reach", "--bench", "127.0.0.1:5000"], ["--bench needs --port"]),
    (["--camera", "0", "--instruction", "open the drawer", "--port", "/dev/ttyACM0", "--bench", "127.0.0.1:1"],
     ["use it with --sim"]),
])
def test_run_refuses_a_contradictory_arm_before_loading_anything(tmp_path, args, needles):
    # The bundle does not exist: the arguments are checked first.
    _one_line_error(run_module("runtime", "run", "--bundle", str(tmp_path / "none"), *args), *needles)


@pytest.mark.parametrize("args, needles", [
    ([], ["--pty", "--port PATH_OR_URL"]),
    (["--pty", "--arm", "metaworld"], ["needs --task"]),
    (["--pty", "--task", "reach"], ["add --arm metaworld"]),
    (["--port", "/dev/ttyNOPE"], ["cannot open /dev/ttyNOPE", "--pty"]),
    (["--port", "loop://", "--pace"], ["--pace"]),
])
def test_emulate_refuses_bad_arguments_in_one_line(args, needles):
    _one_line_error(run_module("firmware_bridge", "emulate", *args), *needles)
