import copy

import pytest

from castlib.config import CONFIG_DIR, PROFILES, REPO_ROOT, Config, load_config
from castlib.errors import ConfigError


@pytest.mark.parametrize("profile", PROFILES)
def test_every_shipped_profile_loads_and_names_itself(profile):
    assert load_config(profile).profile == profile


def test_an_unknown_key_in_a_profile_names_the_file_and_the_dotted_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("augment:\n  strong:\n    brightnes: 0.4\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert err.value.path == bad and err.value.key == "augment.strong.brightnes"
    assert str(bad) in str(err.value) and "unknown key" in str(err.value)


def test_a_wrong_type_names_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("augment:\n  crop: 112\n")
    with pytest.raises(ConfigError, match="augment.crop.*expected list"):
        load_config(bad)
    bad.write_text("data:\n  synthetic:\n    cityscapes: {train: many}\n")
    with pytest.raises(ConfigError, match="data.synthetic.cityscapes.train.*expected int"):
        load_config(bad)


def test_a_broken_yaml_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("augment: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_are_typed_and_an_int_is_accepted_where_a_float_is_due():
    cfg = load_config("smoke", ["augment.hflip=1", "data.dataset=ade20k"])
    assert cfg.augment.hflip == 1.0 and isinstance(cfg.augment.hflip, float)
    assert cfg.data.dataset == "ade20k"
    with pytest.raises(ConfigError, match="<override>.*augment.hflip"):
        load_config("smoke", ["augment.hflip=yes please"])


def test_per_dataset_sections_apply_only_to_their_dataset_and_overrides_still_win():
    assert load_config("paper").augment.crop == [518, 1022]
    assert load_config("paper", ["data.dataset=ade20k"]).augment.crop == [644, 644]
    assert load_config("paper", ["data.dataset=ade20k", "augment.crop=[14, 14]"]).augment.crop == [14, 14]


def test_a_typo_in_a_per_dataset_section_is_caught_even_when_unused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("per_dataset:\n  ade20k:\n    augment: {crops: [1, 1]}\n")
    with pytest.raises(ConfigError, match="per_dataset.ade20k.augment.crops"):
        load_config(bad)


# Keys of configs/defaults.yaml that castlib reads other than by name from a config (what the recorder below
# sees), each with how it is read. A key the guard reports belongs here only if it is read some other way; say how.
# A key that reaches a run only whole, inside a section a stage declares it reads (hashed into the run id by
# ``stage_config``), does not count as read: hashing a key that nothing uses only forks the runs.
READ_OTHERWISE = {
    "per_dataset": "castlib.config.load_config merges the section of data.dataset over the config as a mapping",
}

# The smoke profile cut to a few seconds a stage: 12 small images, one or two iterations per stage; the options
# that switch a code path on (the strong view's random resized crop, GD's burn-in then EMA phase) are on so that
# their keys are read.
TINY = ("data.synthetic.cityscapes.train=12", "data.synthetic.cityscapes.val=1", "data.synthetic.cityscapes.height=64",
        "data.synthetic.cityscapes.width=128", "train.teacher.finetune_iterations=1",
        "train.teacher.self_training_iterations=1", "train.student.iterations=1", "train.refinement.iterations=1",
        "train.pretrain.teacher_iterations=1", "train.pretrain.backbone_iterations=1",
        "augment.strong.random_resized_crop.enabled=true", "baselines.guided_distillation.teacher_iterations=1",
        "baselines.guided_distillation.iterations=2", "baselines.guided_distillation.burn_in_iterations=1",
        "eval.efficiency.warmup=0", "eval.efficiency.repeats=1")


class ReadRecorder:
    """Records the full dotted path of every key read from a whole config while :meth:`patch` is on.

    A whole config is a :class:`~castlib.config.Config` holding ``profile`` (what ``load_config`` returns, or a
    run's stored part of one, which keeps the nesting); every mapping read from it knows its dotted path, and so
    do its deep copies (``with_changes``), so a read anywhere below is recorded as ``data.synthetic.seed``, not as
    ``seed``. Reads are ``cfg.a.b``, ``cfg["a"]``, ``cfg.get("a")``, ``cfg.get_path("a.b")`` and unpacking
    (``{**section}``, ``dict(section)``); ``items()``, ``values()`` and ``to_dict()`` (hashing, copying, saving)
    are not. A mapping built afresh by castlib (``Config({...})`` of a few values) has no path and records
    nothing."""

    def __init__(self):
        self.paths: set[str] = set()

    def _prefix(self, node: Config) -> str | None:
        prefix = node.__dict__.get("_read_prefix")
        if prefix is None and dict.__contains__(node, "profile"):
            prefix = node.__dict__["_read_prefix"] = ""
        return prefix

    def _note(self, node: Config, key, value):
        prefix = self._prefix(node)
        if prefix is not None and isinstance(key, str):
            self.paths.add(prefix + key)
            if isinstance(value, Config):
                value.__dict__["_read_prefix"] = f"{prefix}{key}."
        return value

    def patch(self, monkeypatch) -> None:
        recorder = self

        def getitem(node, key):
            return recorder._note(node, key, dict.__getitem__(node, key))

        def get(node, key, default=None):
            return recorder._note(node, key, dict.__getitem__(node, key)) if dict.__contains__(node, key) else default

        def deepcopy(node, memo):
            out = Config({k: copy.deepcopy(v, memo) for k, v in node.items()})
            if "_read_prefix" in node.__dict__:
                out.__dict__["_read_prefix"] = node.__dict__["_read_prefix"]
            return out

        def iterate(node):  # a Python __iter__ sends {**node} and dict(node) through __getitem__
            return dict.__iter__(node)

        for name, method in (("__getitem__", getitem), ("get", get), ("__deepcopy__", deepcopy),
                             ("__iter__", iterate)):
            monkeypatch.setattr(Config, name, method)


def _leaf_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        keys += _leaf_keys(value, f"{dotted}.") if isinstance(value, dict) and value else [dotted]
    return keys


def _as_defaults_key(key: str, defaults: dict) -> str:
    """A profile's leaf key as the defaults' key it sets: ``per_dataset.ade20k.train.student.iterations`` ->
    ``train.student.iterations``; a key inside a free-form section (``table_seeds.4``) -> the section."""
    parts = key.split(".")
    if parts[0] == "per_dataset" and len(parts) > 2:
        parts = parts[2:]
    node, out = defaults, []
    for part in parts:
        if not isinstance(node, dict) or not node:
            break
        node = node.get(part)
        out.append(part)
    return ".".join(out)


def _read_by_castlib(root, monkeypatch) -> set[str]:
    """What castlib reads of a config while it trains every stage (CAST, the stand-ins, Guided Distillation) for
    an iteration or two and evaluates each, plans every table, measures Fig. 2's efficiency, builds a model on each
    backbone, checks the paper profile's pretrained weights and reads the other dataset's sizes and metric."""
    from _workspace import prepared_config, workspace_overrides

    from castlib.baselines.guided_distillation import guided_distillation
    from castlib.data.classes import CLASS_LISTS
    from castlib.data.loaders import synthetic_spec
    from castlib.doctor import weights
    from castlib.engine import stages
    from castlib.engine.pretrain import source_config
    from castlib.eval.efficiency import teacher_vs_student
    from castlib.eval.evaluate import eval_options
    from castlib.models import build_model
    from castlib.report.costs import plan_tables

    recorder = ReadRecorder()
    recorder.patch(monkeypatch)
    cfg = prepared_config(root, workspace_overrides(root, *TINY))
    stages.cast(cfg)
    guided_distillation(cfg, "resnet50", cfg.data.label_fraction)
    plan_tables(cfg, (3, 4, 5, 6, 7, 8))
    teacher_vs_student(cfg)
    for backbone in cfg.model.backbones:
        build_model(cfg.with_changes({"model.baseline_backbone": backbone}), "baseline", len(CLASS_LISTS["cityscapes"]))
    list(weights(load_config("paper", [f"data.root={root}"]), [8]))
    ade20k = load_config("smoke", ["data.dataset=ade20k"])
    synthetic_spec(ade20k), synthetic_spec(source_config(ade20k)), eval_options(ade20k)
    return recorder.paths


def test_every_config_key_is_read_by_its_full_path(tmp_path, monkeypatch):
    """Each leaf key of configs/defaults.yaml and of the shipped profiles is read by castlib under its full dotted
    path (``train.pretrain.seed`` counts, a read of ``seed`` elsewhere does not)."""
    from castlib.config import DEFAULTS_FILE, read_yaml

    defaults = read_yaml(DEFAULTS_FILE)
    keys = set(_leaf_keys(defaults))
    for profile in PROFILES:
        keys |= {_as_defaults_key(k, defaults) for k in _leaf_keys(read_yaml(CONFIG_DIR / f"{profile}.yaml"))}
    read = _read_by_castlib(tmp_path, monkeypatch)
    unread = sorted(key for key in keys if key not in read and key not in READ_OTHERWISE)
    assert not unread, (f"config key(s) {unread} are read by no castlib code that trains, evaluates, plans or "
                        f"measures (tests/test_config.py records every read by its dotted path): read them, remove "
                        f"them, or list each with how it is read in READ_OTHERWISE in tests/test_config.py")
    assert not READ_OTHERWISE.keys() & read, "a key of READ_OTHERWISE is read by name now: drop it from the list"


def test_a_stage_override_of_the_memory_bank_is_honoured_and_an_unknown_one_is_named():
    from castlib.engine.fitting import contrastive_section

    cfg = load_config("smoke", ["train.student.contrastive.bank_size=300"])
    section = contrastive_section(cfg, "student", cfg.train.student)
    assert (section["bank_size"], section["bank_push"]) == (300, cfg.loss.contrastive.bank_push)
    assert contrastive_section(cfg, "teacher", cfg.train.teacher)["bank_size"] == 10_000
    with pytest.raises(ConfigError, match="train.teacher.contrastive.bank_sise.*unknown key"):
        load_config("smoke", ["train.teacher.contrastive.bank_sise=300"])


def test_the_data_source_is_named_and_a_root_means_real_unless_the_source_is_named(tmp_path):
    """data.source (issue 30): synthetic on smoke and mini, real on paper; a root given where the source is not
    named in the same place means real; a named source wins; synthetic reads no root; roots are resolved."""
    assert [(load_config(p).data.source, load_config(p).data.root) for p in PROFILES] == [
        ("synthetic", None), ("synthetic", None), ("real", None)]
    assert load_config("smoke", [f"data.root={tmp_path}/"]).data.source == "real"
    assert load_config("smoke", [f"data.root={tmp_path}/"]).data.root == str(tmp_path.resolve())
    named = load_config("paper", [f"data.root={tmp_path}", "data.source=synthetic"])
    assert (named.data.source, named.data.root) == ("synthetic", None)
    profile = tmp_path / "mine.yaml"
    profile.write_text(f"per_dataset:\n  ade20k:\n    data: {{root: {tmp_path}}}\n")
    assert load_config(profile).data.source == "synthetic"  # the section of another dataset
    assert load_config(profile, ["data.dataset=ade20k"]).data.source == "real"
    assert load_config(profile, ["data.dataset=ade20k", "data.source=synthetic"]).data.source == "synthetic"
    assert load_config("smoke", ["data.root=relative/root"]).data.root == str(REPO_ROOT / "relative" / "root")
    with pytest.raises(ConfigError, match="data.source.*'mixed' is not one of synthetic, real"):
        load_config("smoke", ["data.source=mixed"])


def test_device_auto_means_cuda_on_paper_only():
    assert load_config("paper").device == "cuda" and load_config("paper", ["device=auto"]).device == "cuda"
    assert load_config("paper", ["device=cpu"]).device == "cpu"
    assert load_config("smoke").device == "auto" and load_config("mini").device == "auto"
