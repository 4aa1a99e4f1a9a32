"""launch.study [variants]: validated on load, run interleaved with repeats, named in run ids,
labels and scaling.run's --variant."""
from __future__ import annotations


import pytest

from common.errors import UserError
from launch.runargs import RunSettings
from launch.study import StudySettings, main, plan, profile_path
from launch.variants import load_variants, parse_variants

CODE = {"source_hash": "x" * 40}


def test_variants_parse_in_file_order_with_batch_and_extras():
    vs = parse_variants({"b32": {"batch_size": 32}, "x": {"xla": True, "precision": "bf16", "prefetch": 4},
                         "t2": {"threads": 2}}, "f.toml")
    assert [v.name for v in vs] == ["b32", "x", "t2"]
    assert vs[0].run_overrides == {"global_batch": 32, "batch_per_rank": 32}
    assert vs[1].extra_args() == ["--xla", "--precision", "bf16", "--prefetch", "4", "--variant", "x"]
    assert parse_variants({"n": {"xla": False}}, "f")[0].extra_args() == ["--no-xla", "--variant", "n"]


@pytest.mark.parametrize("table, words", [
    ({"b": {"batch": 32}}, "unknown key 'batch'"),
    ({"b": {"batch_size": "32"}}, "batch_size must be int"),
    ({"b": {"precision": "half"}}, "precision 'half' is not one of"),
    ({"b/c": {"xla": True}}, "variant name"),
    ({"b": 3}, "must be a table"),
    ({"b": {"prefetch": -1}}, "prefetch must be >= 0"),
])
def test_bad_variants_name_the_variant_and_key(table, words):
    with pytest.raises(UserError, match=words):
        parse_variants(table, "study.toml")


def test_plan_interleaves_variants_inside_repeats(tmp_path):
    study = StudySettings(name="v", out_dir=str(tmp_path), world_sizes=[1], modes=["weak"], engines=["horovod"],
                          allreduce_bench=False, analyse=False)
    run = RunSettings(epochs=2, iterations_per_epoch=2, warmup_epochs=1, threads=1)
    vs = parse_variants({"b32": {"batch_size": 32}, "b64-xla": {"batch_size": 64, "xla": True}}, "t")
    steps = plan(study, run, code=CODE, repeats=2, cores=2, variants=vs)
    assert [s.run_id for s in steps] == ["horovod-weak-n1-b32", "horovod-weak-n1-b64-xla",
                                         "horovod-weak-n1-b32-r2", "horovod-weak-n1-b64-xla-r2"]
    assert [s.variant for s in steps] == ["b32", "b64-xla", "b32", "b64-xla"]
    second = steps[1].argv
    assert second[second.index("--batch-per-rank") + 1] == "64" and "--xla" in second
    assert second[second.index("--variant") + 1] == "b64-xla"
    assert "[b64-xla]" in steps[1].label


def test_variant_batch_must_split_over_the_ranks(tmp_path):
    study = StudySettings(name="v", out_dir=str(tmp_path), world_sizes=[1, 2], modes=["strong"],
                          engines=["horovod"], allreduce_bench=False, analyse=False)
    with pytest.raises(UserError, match=r"\[variants\] odd: .*global_batch 33"):
        plan(study, RunSettings(), code=CODE, cores=2, variants=parse_variants({"odd": {"batch_size": 33}}, "t"))


def test_variants_profile_is_valid_and_a_config_replaces_its_variants(tmp_path, capsys):
    shipped = load_variants(str(profile_path("variants")), None)
    assert len(shipped) == 12 and {v.extra.get("precision") for v in shipped} == {None, "bf16"}
    mine = tmp_path / "mine.toml"
    mine.write_text('[study]\nname = "tiny"\n[variants]\nonly = { batch_size = 16 }\n')
    assert [v.name for v in load_variants(str(profile_path("variants")), str(mine))] == ["only"]
    assert main(["--profile", "variants", "--config", str(mine), "--dry-run", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "horovod-weak-n1-only" in out and "--variant only" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[variants]\nx = { batchsize = 16 }\n')
    assert main(["--profile", "variants", "--config", str(bad), "--dry-run"]) == 2
    assert "bad.toml: [variants] x: unknown key 'batchsize'" in capsys.readouterr().err
