import pytest

from castlib.config import PROFILES, load_config
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
