"""tools/horovod_knobs.py without MPI: the interleaved plan and its commands, settings names and
combinations, and the table built from fake run directories with known answers."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_support import ITERATIONS, make_run  # noqa: E402

from common.errors import UserError  # noqa: E402
from conftest import ROOT  # noqa: E402
from scaling.allreduce_bench import SCHEMA as BENCH_SCHEMA, TRAINING_KEY  # noqa: E402

TOOL = ROOT / "tools" / "horovod_knobs.py"
_spec = importlib.util.spec_from_file_location("horovod_knobs", TOOL)
knobs = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = knobs   # dataclasses look their module up while the file runs
_spec.loader.exec_module(knobs)


def _plan(tmp_path: Path, names: list[str], repeats: int = 2) -> "knobs.Plan":
    known = knobs.single_settings("photons")
    return knobs.Plan("photons", 2, repeats, 3, 4, [knobs.resolve_setting(n, known) for n in names], tmp_path)


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------ the plan
def test_the_plan_interleaves_references_and_settings_per_repeat(tmp_path):
    jobs = knobs.build_jobs(_plan(tmp_path, ["baseline", "cycle_time", "gloo"], repeats=2))
    assert [(j.name, j.repeat) for j in jobs] == [
        (name, r) for r in range(2) for name in ("one-rank", "mpi-floor", "baseline", "cycle_time", "gloo")]
    assert len({j.out for j in jobs}) == len(jobs)            # no run overwrites another


def test_commands_carry_each_setting_to_every_rank(tmp_path):
    jobs = {j.name: j for j in knobs.build_jobs(_plan(tmp_path, ["baseline", "cycle_time+fusion_fit", "gloo",
                                                                  "ompi_ring"], repeats=1))}
    one = jobs["one-rank"].cmd
    assert one[one.index("-np") + 1] == "1" and "--engine" in one and one[one.index("--mode") + 1] == "weak"
    floor = jobs["mpi-floor"].cmd
    assert floor[floor.index("-m") + 1] == "scaling.allreduce_bench"
    assert floor[floor.index("--engine") + 1] == "mpi" and floor[floor.index("--training-sizes") + 1] == "photons"
    combo = jobs["cycle_time+fusion_fit"].cmd
    assert combo[combo.index("--cycle-time-ms") + 1] == "0.1"
    # 1.63 MB of photon critic gradients fit the next power of two, 2 MiB.
    assert combo[combo.index("--fusion-threshold-bytes") + 1] == str(2 * 1024**2)
    assert combo[combo.index("--epochs") + 1] == "3" and combo[combo.index("--iterations-per-epoch") + 1] == "4"
    gloo = jobs["gloo"]
    assert gloo.env == {"HOROVOD_CPU_OPERATIONS": "gloo"}
    assert gloo.cmd[gloo.cmd.index("-x") + 1] == "HOROVOD_CPU_OPERATIONS"
    assert gloo.cmd.index("-x") < gloo.cmd.index("-np")       # an mpirun option, not the program's
    ring = " ".join(jobs["ompi_ring"].cmd)
    assert "--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm 4 -np 2" in ring
    assert "--mca" not in " ".join(jobs["baseline"].cmd) and "-x" not in jobs["baseline"].cmd


def test_a_combination_merges_its_parts_and_refuses_contradictions():
    known = knobs.single_settings("photons")
    both = knobs.resolve_setting("cache_off+mpi_threads_disable", known)
    assert both.env == {"HOROVOD_CACHE_CAPACITY": "0", "HOROVOD_MPI_THREADS_DISABLE": "1",
                        "MPI4PY_RC_THREAD_LEVEL": "serialized"}
    with pytest.raises(UserError, match="sets --fusion-threshold-bytes twice"):
        knobs.resolve_setting("fusion_off+fusion_fit", known)
    with pytest.raises(UserError, match="unknown setting 'turbo'"):
        knobs.resolve_setting("cycle_time+turbo", known)


def test_every_default_setting_resolves():
    known = knobs.single_settings("pions")
    assert {"baseline", "cycle_time", "fusion_off", "fusion_fit", "gloo", "mpi_threads_disable", "cache_off",
            "ompi_ring"} <= set(known)
    assert [knobs.resolve_setting(n, known).name for n in knobs.default_names("pions")] == knobs.default_names("pions")


@pytest.mark.parametrize("args, words", [
    (["--settings", "baseline,turbo"], "unknown setting 'turbo'"),
    (["--settings", "baseline,baseline"], "a setting is named twice"),
    (["--settings", "cycle_time+cycle_time"], "names a setting twice"),
    (["--epochs", "1"], "--epochs 1: needs >= 2"),
    (["--ranks", "1"], "--ranks 1: needs >= 2"),
    (["--repeats", "0"], "--repeats"),
])
def test_bad_input_is_one_line_and_exit_2(args, words, capsys):
    assert knobs.main(["--dry-run", *args]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


def test_bad_input_from_the_shell_exits_2_without_a_traceback():
    proc = _tool("--settings", "turbo")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: --settings: unknown setting 'turbo' (known: " + ", ".join(knobs.single_settings("photons"))
        + "; combine with +)"]


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path):
    proc = _tool("--dry-run", "--repeats", "2", "--settings", "baseline,gloo", "--out", str(tmp_path / "k"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 * 4 and all("mpirun" in ln for ln in lines)
    assert lines[3].startswith("HOROVOD_CPU_OPERATIONS=gloo mpirun ")
    assert not (tmp_path / "k").exists()


# ----------------------------------------------------------------- the table, fake runs
def _floor(path: Path, per_iteration_s: float) -> Path:
    path.write_text(json.dumps({"schema": BENCH_SCHEMA, "results": [],
                                TRAINING_KEY: {"per_iteration_s_median": per_iteration_s}}))
    return path


def test_table_from_fake_runs_has_known_answers(tmp_path):
    plan = _plan(tmp_path, ["baseline", "cycle_time", "gloo"], repeats=2)
    # Epoch 0 is warm-up (and far slower: it must not count); make_run's comm_s is 0.2 of time_s.
    one = [make_run(tmp_path, f"one{r}", n=1, mode="weak", time_fn=lambda e, k, r=r: 90.0 if e == 0 else 0.8 + 0.1 * r)
           for r in range(2)]
    base = [make_run(tmp_path, f"b{r}", n=2, mode="weak", time_fn=lambda e, k: 99.0 if e == 0 else 1.0 + 0.5 * k)
            for r in range(2)]                                  # slowest rank 1.5 s per epoch
    fast = [make_run(tmp_path, f"c{r}", n=2, mode="weak", time_fn=lambda e, k, r=r: 1.0 + 0.2 * r) for r in range(2)]
    floors = [_floor(tmp_path / f"f{r}.json", 0.01) for r in range(2)]
    outcomes = {}
    for r in range(2):
        outcomes[("one-rank", r)] = (knobs.run_figures(one[r]), "")
        outcomes[("mpi-floor", r)] = (knobs.read_per_iteration_s(floors[r]), "")
        outcomes[("baseline", r)] = (knobs.run_figures(base[r]), "")
        outcomes[("cycle_time", r)] = (knobs.run_figures(fast[r]), "")
        outcomes[("gloo", r)] = (None, "exit 1: gloo context not initialised")
    results, refs = knobs.summarise(plan, outcomes)
    by = {r.name: r for r in results}
    b = by["baseline"]
    assert b.iteration_s.median == pytest.approx(1.5 / ITERATIONS)          # slowest rank, warm-up out
    assert b.comm_per_iteration_s.median == pytest.approx(0.2 * 1.25 / ITERATIONS)   # mean over ranks
    assert b.comm_over_floor_ratio.median == pytest.approx(0.2 * 1.25 / ITERATIONS / 0.01)
    assert (b.weak_efficiency_ratio.low, b.weak_efficiency_ratio.high) == (pytest.approx(0.8 / 1.5),
                                                                           pytest.approx(0.9 / 1.5))
    c = by["cycle_time"]
    assert (c.iteration_s.low, c.iteration_s.high) == (pytest.approx(0.1), pytest.approx(0.12))
    # Ratios are taken within each repeat: repeat 0 0.8/1.0, repeat 1 0.9/1.2.
    assert c.weak_efficiency_ratio.median == pytest.approx((0.8 / 1.0 + 0.9 / 1.2) / 2)
    assert c.iteration_over_baseline_ratio.median == pytest.approx((1.0 / 1.5 + 1.2 / 1.5) / 2)
    assert by["gloo"].iteration_s.count == 0 and by["gloo"].errors == ["exit 1: gloo context not initialised"]

    table = knobs.markdown_table(plan, results, refs, (0.5, 0.7))
    rows = {ln.split("|")[1].strip(): ln for ln in table.splitlines() if ln.startswith("| ")}
    assert "| 150.0 (150.0..150.0) | 25.00 (25.00..25.00) | 2.50 (2.50..2.50) |" in rows["baseline"]
    assert "could not run: exit 1: gloo context not initialised" in rows["gloo"]
    assert "horovodrun" in rows["gloo"]                                   # the setting's note says what to try
    assert "| 110.0 (100.0..120.0) |" in rows["cycle_time"]
    assert "10.000 ms" in table                                            # the MPI floor per iteration


def test_a_run_with_only_warm_up_epochs_is_a_user_error(tmp_path):
    run = make_run(tmp_path, "w", n=2, mode="weak", epochs=1)
    with pytest.raises(UserError, match="no epoch after the warm-up"):
        knobs.run_figures(run)


def test_spread_text_and_nan_free_json():
    assert knobs.Spread.of([1.0, 3.0, 2.0]).text(1, 1) == "2.0 (1.0..3.0)"
    assert knobs.Spread.of([math.nan, None]).text() == "n/a"
    assert knobs._no_nan({"a": [1.0, math.nan], "b": {"c": math.inf}}) == {"a": [1.0, None], "b": {"c": None}}


def test_a_failed_run_is_reported_by_its_last_line_that_says_something():
    # mpirun's report of a rank killed by a signal, as Gloo under mpirun ends here.
    stderr = ("Traceback ...\n[vm:1] *** End of error message ***\n" + "-" * 74 + "\nmpirun noticed that process "
              "rank 0 with PID 0 on node n1 exited on signal 11 (Segmentation fault).\n" + "-" * 74 + "\n\n")
    assert knobs.last_error_line(stderr).endswith("exited on signal 11 (Segmentation fault).")
    assert knobs.last_error_line("----\n") == "no output"
