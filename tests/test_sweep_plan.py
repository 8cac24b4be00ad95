"""One sweep plan (cluster/sweep_plan.py): the trials Tune grids over, submitit submits and the sbatch array
runs are one list; each check of what a launch trains exists once and answers the same in either launcher;
a stored plan reads back as itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster import sweep
from cluster.sweep_plan import SweepPlan
from conftest import ROOT
from gan import models
from gan.errors import UserError
from jobs import settling, submit, tune

SWEEP = ["--gens", "unet,resnet", "--sweep", "hparams", "--samples", "2", "--seeds", "2",
         "--grid", "optim.beta1=0.5,0.9", "--preset", "tiny", "--data", "synthetic"]


def plan_of(launcher, argv: list[str]) -> SweepPlan:
    args, extra = launcher.parse_args(argv)
    name = "tune" if launcher is tune else "submitit"
    return SweepPlan.from_flags(args, extra, launcher=name, settle=settling.settle_plan)


def test_every_launcher_runs_the_same_list_of_trials():
    from cluster import tune as tuning
    by_tune, by_submit = plan_of(tune, SWEEP), plan_of(submit, SWEEP)
    trials = by_tune.trials()
    assert trials == by_submit.trials()
    assert len(trials) == 2 * 2 * 2 * 2  # generators x beta1 x draws x seeds
    assert [t["model.generator"] for t in trials] == ["unet"] * 8 + ["resnet"] * 8  # generators outermost
    for t in trials:  # a trial carries only its own generator's knobs
        other = "resnet" if t["model.generator"] == "unet" else "unet"
        assert not any(k.startswith(f"model.{other}.") for k in t) and t["optim.beta1"] in (0.5, 0.9)
    assert sweep.search_space(by_tune)[tuning.TRIAL] == {"grid_search": trials}  # Tune grids over the list
    assert by_tune.overrides == by_submit.overrides == {"data.source": "synthetic"}


@pytest.mark.parametrize("launcher", [tune, submit], ids=["tune", "submit"])
@pytest.mark.parametrize("argv,message", [
    (["--seeds", "2", "--train.seed", "3"], "--seeds: sets train.seed 0..N-1 itself; drop --train.seed"),
    (["--seeds", "2", "--grid", "train.seed=1,2"], "--seeds: sets train.seed 0..N-1 itself"),
    (["--seeds", "0"], "--seeds: must be >= 1, got 0"),
    (["--splits", "2", "--data.split_seed", "1"], "--splits: draws each run's split itself"),
    (["--grid", "optim.lr_g"], "--grid optim.lr_g: expected KEY=V1,V2"),
    (["--grid", "model.resnet.blocks=-1"], "model.resnet.blocks = -1 (resnet)"),
    (["--gens", "unet", "--model.resnet.blocks", "4"], "--model.resnet.blocks: resnet is not among --gens unet"),
    (["--samples", "3"], "--samples 3: the space has nothing random to draw"),
    (["--settle", "--seeds", "2"], "--settle: compares the generators' own configurations"),
])
def test_each_check_exists_once_and_answers_alike_in_both_launchers(launcher, argv, message):
    with pytest.raises(UserError) as refused:
        plan_of(launcher, ["--preset", "tiny", *argv])
    assert message in str(refused.value)


def test_the_sbatch_array_runs_task_k_of_the_same_list():
    trials = SweepPlan.for_array(seeds=2).trials()
    assert len(trials) == 2 * len(models.names())
    listed = subprocess.run([sys.executable, "-m", "cluster.plan", "tasks", "--seeds", "2"], capture_output=True,
                            text=True, cwd=ROOT, check=True).stdout.split()
    assert listed == [str(len(trials))]
    for k in (0, len(trials) - 1):
        line = subprocess.run([sys.executable, "-m", "cluster.plan", "task", str(k), "--seeds", "2"],
                              capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
        assert line[:2] == [trials[k]["model.generator"], str(trials[k]["train.seed"])]


def test_a_stored_plan_reads_back_as_itself_and_another_is_refused(tmp_path):
    from gan.contract import TUNE_ARGS
    from gan.files import write_json
    plan = plan_of(tune, SWEEP)
    write_json(tmp_path / TUNE_ARGS, plan.to_dict())
    back = SweepPlan.load(tmp_path / TUNE_ARGS, settling.check_stored_plan, expect="tune")
    assert back.trials() == plan.trials() and plan.differs(back) == []
    plan.refuse_a_different(tmp_path, "RESUME", settling.check_stored_plan)  # the same plan again: allowed
    other = plan_of(tune, [*SWEEP[:-4], "--preset", "small"])
    with pytest.raises(UserError, match=r"holds a different sweep \(preset, .*continue it with: RESUME"):
        other.refuse_a_different(tmp_path, "RESUME", settling.check_stored_plan)
    with pytest.raises(UserError, match="holds no settle sweep"):
        SweepPlan.load(tmp_path / TUNE_ARGS, settling.check_stored_plan, expect="submitit")


def test_a_launch_sizes_each_net_once_and_later_launches_from_the_cache(tmp_path, monkeypatch):
    """The disk check's checkpoint sizes (which build the nets, importing TensorFlow) are kept in the cache:
    a later process answers the same without TensorFlow; other model code, or a damaged cache file, sizes
    the net again; a cache that cannot be written is one note line."""
    from cluster.costs import CheckpointSizes
    from gan.config import make_config
    from gan.models import checkpoint_bytes
    cache = tmp_path / "cache" / "checkpoint-bytes.json"
    model = make_config("tiny", {"model.generator": "resnet"}).model
    sizes = CheckpointSizes(cache)
    built = sizes.bytes(model, 32)
    assert built == checkpoint_bytes(model, 32) and sizes.added
    sizes.save()
    later = subprocess.run([sys.executable, "-c", f"""
import sys
from cluster.costs import CheckpointSizes
from gan.config import make_config
sizes = CheckpointSizes({str(cache)!r})
print(sizes.bytes(make_config("tiny", {{"model.generator": "resnet"}}).model, 32), sizes.added,
      "tensorflow" in sys.modules)"""], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert later.stdout.split() == [str(built), "False", "False"], later.stderr[-2000:]
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "notes.py").write_text("# other model code\n")
    monkeypatch.setenv(models.EXTRA_ENV, str(plugins))
    assert CheckpointSizes(cache).bytes(model, 32) == built and CheckpointSizes(cache).known == sizes.known
    other = CheckpointSizes(cache)
    other.bytes(model, 32)
    assert other.added, "model code changed: sized again"
    monkeypatch.delenv(models.EXTRA_ENV)
    key = next(iter(sizes.known))
    for edited in ('{"%s": -1}' % key, '{"%s": true}' % key, "[1, 2]", "{trunc"):
        cache.write_text(edited)
        damaged = CheckpointSizes(cache)
        assert damaged.bytes(model, 32) == built and damaged.added, edited
    assert damaged.bytes(model, 32) == built and damaged.added
    damaged.save()
    assert CheckpointSizes(cache).known == sizes.known  # rewritten whole
    said = []
    unwritable = CheckpointSizes(tmp_path / "a-file" / "checkpoint-bytes.json")
    (tmp_path / "a-file").write_text("")
    unwritable.bytes(model, 32)
    unwritable.save(said.append)
    assert len(said) == 1 and said[0].startswith("note: net sizes not kept in"), said
