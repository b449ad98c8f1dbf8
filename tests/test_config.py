import pytest

from castlib.config import PROFILES, REPO_ROOT, load_config
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


# Keys of configs/defaults.yaml that no castlib code reads by name, each with the reason it is still a key.
# A new key that the guard below reports belongs here only if it is read some other way; say how.
UNREAD_KEYS = {
    "per_dataset": "read by castlib.config.load_config through the cfg dict, not by name",
    "seeds": "the seeds that the tables average over: read by the table builders (castlib/report), being built",
}


def _names_in_castlib() -> set[str]:
    """Every attribute name, keyword or annotated name, and every identifier-like string (dotted ones split)
    in castlib's source: the ways code reads a config key."""
    import ast
    import io
    import re
    import tokenize

    from castlib.config import REPO_ROOT

    names: set[str] = set()
    for path in (REPO_ROOT / "castlib").rglob("*.py"):
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
                  if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]
        for before, token, after in zip(tokens, tokens[1:], tokens[2:], strict=False):
            if token.type == tokenize.NAME and (before.string == "." or after.string in ("=", ":")):
                names.add(token.string)
            if token.type == tokenize.STRING and not re.match(r"[A-Za-z]*f", token.string, re.IGNORECASE):
                text = ast.literal_eval(token.string)
                if isinstance(text, str) and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text):
                    names.update(text.split("."))
    return names


def _leaf_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        keys += _leaf_keys(value, f"{dotted}.") if isinstance(value, dict) and value else [dotted]
    return keys


def test_every_config_key_is_read_somewhere_in_castlib():
    from castlib.config import DEFAULTS_FILE, read_yaml

    names = _names_in_castlib()
    unread = [key for key in _leaf_keys(read_yaml(DEFAULTS_FILE))
              if key not in UNREAD_KEYS and key.split(".")[-1] not in names]
    assert not unread, (f"config key(s) {unread} of configs/defaults.yaml are read nowhere in castlib (no attribute, "
                        f"keyword or string of that name): read them, remove them, or list each with its reason in "
                        f"UNREAD_KEYS in tests/test_config.py")


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
