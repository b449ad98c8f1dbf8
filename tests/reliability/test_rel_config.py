"""Config mistakes end before anything runs, in one `error:` line naming the dotted key (exit 2); overrides
read numbers as a user writes them; every README, docs/ and `--help` example parses and loads."""

from __future__ import annotations

import re

import pytest

from castlib.__main__ import build_parser
from castlib.config import CHOICES, RANGES, REPO_ROOT, load_config
from castlib.data.datasets import DATASETS
from castlib.data.synthetic import MIN_SIDE
from castlib.engine.optim import build_scheduler
from castlib.losses.contrastive_inputs import LOSSES, SCOPES
from castlib.losses.debiased_sampling import EMBEDDINGS, SCORES

BAD_VALUES = [
    ("train.teacher.lr=-1e-4", "key 'train.teacher.lr': -0.0001 is out of range; expected a value in (0, inf)"),
    ("train.student.encoder_lr=0", "key 'train.student.encoder_lr': 0.0 is out of range"),
    ("train.student.iterations=-5", "key 'train.student.iterations': -5 is out of range"),
    ("train.teacher.finetune_iterations=0", "key 'train.teacher.finetune_iterations': 0 is out of range"),
    ("train.teacher.batch_size=-2", "key 'train.teacher.batch_size': -2 is out of range"),
    ("train.pretrain.backbone_warmup_iterations=-1", "key 'train.pretrain.backbone_warmup_iterations': -1 is out"),
    ("train.pretrain.backbone_lr=0", "key 'train.pretrain.backbone_lr': 0.0 is out of range"),
    ("data.label_fraction=1.5", "key 'data.label_fraction': 1.5 is out of range; expected a value in (0, 1)"),
    ("data.label_fractions=[0.1,0]", "key 'data.label_fractions[1]': 0.0 is out of range"),
    ("loss.contrastive.score=squard", "key 'loss.contrastive.score': 'squard' is not one of original, squared, sqrt"),
    ("train.student.contrastive.score=squard", "key 'train.student.contrastive.score': 'squard' is not one of"),
    ("train.student.contrastive.scroe=squared", "key 'train.student.contrastive.scroe': unknown key"),
    ("device=gpu", "key 'device': 'gpu' is not one of auto, cpu, cuda"),
    ("train.student.schedule=cosine", "key 'train.student.schedule': 'cosine' is not one of multistep, poly"),
    ("train.lr=1e-4", "key 'train.lr': unknown key"),
    ("data.synthetic.cityscapes.train=-3", "key 'data.synthetic.cityscapes.train': -3 is out of range"),
    # issue 32: no number passes as inf or NaN (.inf passed the (0, inf) check and ended in a NaN traceback)
    ("train.teacher.lr=.inf", "key 'train.teacher.lr': inf is not a finite number"),
    ("train.student.encoder_lr=.nan", "key 'train.student.encoder_lr': nan is not a finite number"),
    ("augment.hflip=-.inf", "key 'augment.hflip': -inf is not a finite number"),
    ("data.label_fractions=[0.1,.inf]", "key 'data.label_fractions[1]': inf is not a finite number"),
    ("train.student.contrastive.temperature=.inf", "key 'train.student.contrastive.temperature': inf is not a finite"),
    # issue 32: a name that becomes a folder is a single name, never a path
    ("data.synthetic.name=../../../x", "key 'data.synthetic.name': '../../../x' is not a name"),
    ("data.synthetic.name=a/b", "key 'data.synthetic.name': 'a/b' is not a name"),
    ("data.synthetic.name=..", "key 'data.synthetic.name': '..' is not a name"),
    ("profile=../up", "key 'profile': '../up' is not a name"),
    # issue 32: a mapping value that repeats a key
    ("train.teacher={lr: 1.0e-4, lr: 2.0e-4}", "key 'train.teacher.lr': line 1 repeats this key of line 1"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_a_bad_value_names_the_key_and_nothing_starts(cli, private, guard, workspace, override, message):
    check = guard()
    code, err = cli("train", "--stage", "cast", *private, "--set", override)
    assert code == 2 and err.startswith("error: <override>: ") and message in err, err
    assert not (workspace / "results").exists() and not (workspace / "data").exists()
    check.check()


def test_a_typo_in_per_dataset_names_the_key(cli, private, guard, workspace):
    profile = workspace / "mine.yaml"
    profile.write_text("profile: mine\nper_dataset:\n  cityscape:\n    seed: 3\n")
    check = guard()
    code, err = cli("train", "--stage", "cast", "--profile", profile, *private)
    assert code == 2 and err.strip() == (f"error: {profile}: key 'per_dataset.cityscape': unknown dataset "
                                         "(use one of cityscapes, ade20k)")
    check.check()


def test_a_bad_value_in_a_profile_names_the_file_and_key(cli, private, guard, workspace):
    profile = workspace / "mine.yaml"
    profile.write_text("profile: mine\nper_dataset:\n  ade20k:\n    train: {student: {iterations: -1}}\n")
    check = guard()
    code, err = cli("train", "--stage", "cast", "--profile", profile, *private)
    assert code == 2 and err.startswith(f"error: {profile}: key 'per_dataset.ade20k.train.student.iterations': -1")
    check.check()


def test_numbers_read_as_written_in_overrides_and_profiles(workspace):
    assert load_config("smoke", ["train.teacher.lr=1e-4"]).train.teacher.lr == pytest.approx(1e-4)
    profile = workspace / "mine.yaml"
    profile.write_text("profile: mine\ntrain:\n  student: {encoder_lr: 5E-6, decoder_lr: 2e-5}\n")
    student = load_config(profile).train.student
    assert (student.encoder_lr, student.decoder_lr) == (pytest.approx(5e-6), pytest.approx(2e-5))
    assert isinstance(student.encoder_lr, float)


def test_the_enum_lists_match_the_code():
    assert set(CHOICES["data.dataset"]) == set(DATASETS)
    assert (CHOICES["loss.contrastive.score"], CHOICES["loss.contrastive.embedding"]) == (SCORES, EMBEDDINGS)
    assert (CHOICES["loss.contrastive.loss"], CHOICES["loss.contrastive.scope"]) == (LOSSES, SCOPES)
    assert RANGES["data.synthetic.cityscapes.height"][0] == MIN_SIDE
    defaults = load_config("smoke")
    assert set(CHOICES["model.student_backbone"]) == set(defaults.model.backbones)
    import torch

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for kind in CHOICES["train.student.schedule"]:
        build_scheduler(optimizer, kind, 10)


MOVED = "Moved from the README (issue 34)"  # the first line of each finding moved out of the README


def _user_docs() -> str:
    """README.md, the pages of docs/ and the findings moved out of the README (issue 34), whose examples the README
    held; the other findings record commands as they were typed, placeholders included."""
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    pages += [f for f in sorted((REPO_ROOT / "docs" / "findings").glob("*.md")) if MOVED in f.read_text()]
    return re.sub(r"\\\n\s*", " ", "\n".join(page.read_text() for page in pages))  # shell line continuations


def _readme_commands() -> list[str]:
    text = _user_docs()
    spans = [s.split(" #")[0].strip() for s in re.findall(r"python -m castlib [^`\n]*", text)]  # shell comments
    return [s for s in spans if not re.search(r"[{<\[]|\.\.\.|\bDIR\b|\bN\b|\bP\b", s)]


def _help_examples() -> list[str]:
    parser = build_parser()
    helps = [a.help or "" for sub in parser._subparsers._group_actions for p in sub.choices.values()
             for a in p._actions]
    return [m for h in helps for m in re.findall(r"--set (\S+=\S+)", h)]


def test_every_readme_and_help_example_parses_and_loads():
    commands, examples = _readme_commands(), _help_examples()
    assert commands and examples
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(command.split()[3:])
        if hasattr(args, "overrides"):
            from castlib.__main__ import config_from_args

            config_from_args(args)
    for example in examples:
        load_config("smoke", [example])
    readme_sets = re.findall(r"--set ([\w.]+=[^\s`\]]+)", _user_docs())
    readme_sets = [e for e in readme_sets if not e.startswith("key=")]  # the `--set key=value` placeholder
    assert readme_sets
    for example in readme_sets:
        load_config("smoke", [example])


def test_a_key_written_twice_in_a_profile_names_the_file_line_and_key(cli, private, guard, workspace):
    """Issue 32: `teacher: {lr: ...}` then `teacher: {batch_size: 3}` silently dropped the first."""
    profile = workspace / "mine.yaml"
    profile.write_text("profile: mine\ntrain:\n  teacher: {lr: 1.0e-4}\n  teacher: {batch_size: 3}\n")
    check = guard()
    code, err = cli("train", "--stage", "cast", "--profile", profile, *private)
    assert code == 2 and err.strip() == (f"error: {profile}: key 'train.teacher': line 4 repeats this key of line 3 "
                                         "(YAML would keep only the last one); write it once"), err
    assert not (workspace / "results").exists()
    check.check()


@pytest.mark.parametrize("text", ["profile: mine\nseed: 1\nseed: 2\n", "a: &x {seed: 1}\nprofile: m\nprofile: n\n",
                                  "per_dataset:\n  ade20k:\n    seed: 1\n    seed: 2\n"])
def test_every_repeated_key_is_found_at_any_depth(workspace, text):
    from castlib.errors import ConfigError

    profile = workspace / "mine.yaml"
    profile.write_text(text)
    with pytest.raises(ConfigError, match="repeats this key of line") as e:
        load_config(profile)
    assert e.value.path == profile and e.value.key in ("seed", "profile", "per_dataset.ade20k.seed")


def test_keys_merged_in_by_an_anchor_may_be_replaced(workspace):
    profile = workspace / "mine.yaml"
    profile.write_text("profile: mine\ntrain:\n  teacher: &t {lr: 1.0e-4, batch_size: 2}\n"
                       "  student: {batch_size: 4}\nper_dataset:\n  ade20k:\n    train:\n"
                       "      teacher: {<<: *t, lr: 2.0e-4}\n")
    assert load_config(profile, ["data.dataset=ade20k"]).train.teacher.lr == pytest.approx(2e-4)


def test_a_run_config_with_a_repeated_key_is_named(workspace):
    from castlib.engine.runs import Run
    from castlib.errors import ConfigError

    (workspace / "run").mkdir()
    (workspace / "run" / "config.yaml").write_text("profile: smoke\nseed: 0\nseed: 1\n")
    with pytest.raises(ConfigError, match="key 'seed': line 3 repeats this key of line 2"):
        Run("0" * 12, workspace / "run").config()


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty: a profile sets at least its name (profile: NAME)"),
    ("# only a comment\n", "empty: a profile sets at least its name (profile: NAME)"),
    ("- profile\n- smoke\n", "expected a mapping at the top level, got list"),
    ("smoke\n", "expected a mapping at the top level, got str"),
])
def test_an_empty_or_non_mapping_profile_is_an_error(cli, private, guard, workspace, text, problem):
    """Issue 32: an empty YAML file as --profile ran the defaults (paper lengths) labelled smoke."""
    profile = workspace / "mine.yaml"
    profile.write_text(text)
    check = guard()
    code, err = cli("train", "--stage", "cast", "--profile", profile, *private)
    assert code == 2 and err.startswith(f"error: {profile}: key '<file>': {problem}"), err
    assert not (workspace / "results").exists()
    check.check()


def test_a_profile_that_does_not_name_itself_is_named_after_its_file(workspace):
    profile = workspace / "long-run.yaml"
    profile.write_text("seed: 3\n")
    assert load_config(profile).profile == "long-run"
    assert load_config(profile, ["profile=other"]).profile == "other"
    named = workspace / "x.yaml"
    named.write_text("profile: mine\n")
    assert load_config(named).profile == "mine"


def test_a_profile_file_naming_a_path_is_an_error(workspace):
    from castlib.errors import ConfigError

    profile = workspace / "mine.yaml"
    profile.write_text("profile: ../../elsewhere\n")
    with pytest.raises(ConfigError, match="key 'profile': '../../elsewhere' is not a name") as e:
        load_config(profile)
    assert e.value.path == profile


def test_an_infinite_value_in_a_profile_or_its_per_dataset_section_is_named(workspace):
    from castlib.errors import ConfigError

    profile = workspace / "mine.yaml"
    profile.write_text("profile: mine\ntrain:\n  teacher: {lr: .inf}\n")
    with pytest.raises(ConfigError, match="key 'train.teacher.lr': inf is not a finite number"):
        load_config(profile)
    profile.write_text("profile: mine\nper_dataset:\n  ade20k:\n    train: {student: {power: .nan}}\n")
    with pytest.raises(ConfigError, match="key 'per_dataset.ade20k.train.student.power': nan is not a finite"):
        load_config(profile)


@pytest.mark.parametrize("argv", [["train", "--stage", "guided_distillation", "--fraction", "inf"],
                                  ["plan", "--utilisation", "nan"]])
def test_command_line_numbers_are_finite(argv, capsys):
    from castlib.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "is not a finite number" in capsys.readouterr().err
