"""Scripted-expert episodes recorded by several processes (`python -m distill record --workers N`).

Recording is one simulator and one CPU renderer per process: workers spread it over the cores. Each worker is `python -m distill.record_workers LAYOUT_JSON`: it reads one job per line
on stdin ({"task", "seed", "index"}, JSON), records the episode into the dataset's episodes/ folder under
the index it was given, and answers one JSON line (the manifest entry, or {"error": ...}). Only JSON
crosses the pipe. The parent hands out jobs as workers come free and writes the manifest in index order,
so the dataset is the same, file for file, as one process would write.

    python -m distill record --out data/demos --tasks default --episodes 50 --workers 2
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from pathlib import Path
from typing import Callable

from distill.dataset import EpisodeInfo
from runtime.errors import UserError


def record_in_workers(out: Path, config, jobs: list, workers: int,
                      add: Callable[[EpisodeInfo, float, float], None]) -> None:
    """Record `jobs` (EpisodeJob, in dataset order) with `workers` processes, calling `add(info, render_s,
    control_dt)` as each episode finishes (in any order)."""
    spec = json.dumps({"out": str(out), "layout": config.layout()})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "distill.record_workers", spec], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(workers)]
    selector = selectors.DefaultSelector()
    pending = list(reversed(jobs))  # pop() hands them out in dataset order
    busy = 0
    try:
        for proc in procs:
            selector.register(proc.stdout, selectors.EVENT_READ, proc)
            busy += _hand_out(proc, pending)
        while busy:
            for key, _ in selector.select():
                proc = key.data
                line = proc.stdout.readline()
                busy -= 1
                answer = _parse_answer(line, proc)
                add(EpisodeInfo(**answer["episode"]), answer["render_s"], answer["control_dt"])
                busy += _hand_out(proc, pending)
    finally:
        selector.close()
        for proc in procs:
            if proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _hand_out(proc: subprocess.Popen, pending: list) -> int:
    """Give `proc` the next job; 1 when it got one, 0 when none is left."""
    if not pending:
        return 0
    job = pending.pop()
    proc.stdin.write(json.dumps({"task": job.task, "seed": job.seed, "index": job.index}) + "\n")
    proc.stdin.flush()
    return 1


def _parse_answer(line: str, proc: subprocess.Popen) -> dict:
    """A worker's answer line, or a UserError with what went wrong in it."""
    if not line:  # the worker died without answering
        proc.wait()
        last = (proc.stderr.read().strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise UserError(f"a recording worker stopped: {last}")
    answer = json.loads(line)
    if "error" in answer:
        raise UserError(f"a recording worker failed: {answer['error']}")
    return answer


def serve(spec: dict, lines, write: Callable[[str], None]) -> None:
    """The worker's loop: one job line in, one answer line out, until stdin closes."""
    from distill.record import EpisodeJob, EpisodeRecorder, RecordConfig

    config = RecordConfig(tasks=[], **spec["layout"])  # the inverse of RecordConfig.layout()
    recorder = EpisodeRecorder(Path(spec["out"]), config)
    try:
        for line in lines:
            job = json.loads(line)
            try:
                info, render_s = recorder.record(EpisodeJob(job["task"], int(job["seed"]), int(job["index"])))
            except Exception as err:  # reported to the parent, which stops the recording
                write(json.dumps({"error": f"{job['task']} seed {job['seed']}: {type(err).__name__}: {err}"}))
                return
            write(json.dumps({"episode": info.to_dict(), "render_s": render_s, "control_dt": recorder.control_dt}))
    finally:
        recorder.close()


def main() -> None:
    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    serve(json.loads(sys.argv[1]), sys.stdin, write)


if __name__ == "__main__":
    main()
