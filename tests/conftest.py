"""Shared fixtures: tiny synthetic sets in both formats, written once per test session; the test tiers
(tests/README.md): every test gets exactly one of the markers unit, integration, notebooks, slow, gpu, browser,
here, by file or by test name, so that test files need no tier lines of their own."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: never wait on the hub client

import pytest
import torch

from castlib.config import load_config
from castlib.data.synthetic import SyntheticSpec, generate

torch.set_num_threads(min(2, os.cpu_count() or 1))

CITYSCAPES_SPEC = SyntheticSpec("cityscapes", train=12, val=4, height=128, width=256, seed=3)
ADE20K_SPEC = SyntheticSpec("ade20k", train=12, val=4, height=160, width=0, seed=3)


# -- tiers -------------------------------------------------------------------------------------------------------
# integration: the test trains (a stage, a stand-in, Guided Distillation, a table's runs), runs torchrun or another
# process, or runs whole models (a teacher's forward and backward, paper-size FLOP counts) for seconds; by file
# (every test of it) or by file and test name (parameters left out). Chosen from `pytest --durations=0`, per file
# and over the unit tier (tests/README.md): what took over ~2 s on the shared 2 cores for those reasons.
INTEGRATION_FILES = {"test_stages.py", "test_pretrain.py", "test_guided_distillation.py", "test_tables.py",
                     "test_results_current.py", "test_gpu_check.py", "test_rel_runs.py", "test_objective_teacher.py",
                     "test_eval_pseudo_labels.py", "test_loaders.py"}
INTEGRATION_TESTS = {
    "test_config.py": {"test_every_config_key_is_read_by_its_full_path"},
    "test_distributed.py": {"test_uneven_shares_stand_ins_and_micro_batches_against_one_process",
                            "test_torchrun_step_b_and_student_first_step_loss_equals_one_process"},
    "test_engine_core.py": {"test_a_run_another_process_trains_is_waited_for_then_reused_or_taken_over"},
    "test_eval_ceiling.py": {"test_the_ceiling_on_the_smoke_validation_set",
                             "test_the_prompted_ceiling_scores_the_segmenter_on_the_true_boxes",
                             "test_the_ceiling_names_a_run_that_is_not_there"},
    "test_eval_efficiency.py": {"test_teacher_and_student_side_by_side_with_the_students_change",
                                "test_paper_size_student_flops_grow_with_the_input",
                                "test_paper_size_teacher_flops_follow_the_aspect_ratio_not_the_size",
                                "test_fig2_table_puts_the_papers_numbers_beside_the_paper_size_and_measured_models",
                                "test_fig2_table_names_its_data_commit_and_machine_and_says_smoke_ap_is_0",
                                "test_the_efficiency_command_writes_the_fig2_table"},
    "test_eval_model.py": {"test_an_oracle_model_scores_100_with_both_evaluators_and_metrics_json_is_written",
                           "test_a_padded_ade20k_batch_is_cropped_per_image",
                           "test_masks_predicted_on_a_resized_view_are_scored_at_the_ground_truth_size"},
    "test_models_build.py": {"test_a_saved_model_loads_back_identically_offline"},
    "test_models_student.py": {"test_every_table8_baseline_feeds_the_same_decoders",
                               "test_dropout_is_active_in_training_but_never_skips_a_decoder_layer",
                               "test_backward_reaches_the_trainable_parts_only"},
    "test_models_teacher.py": {"test_masks_decoded_without_gradient_in_chunks_equal_those_decoded_at_once",
                               "test_teacher_forward_honours_the_output_contract",
                               "test_supervised_loss_trains_the_configured_parts_only",
                               "test_activation_checkpointing_leaves_the_loss_and_gradients_unchanged",
                               "test_eval_masks_are_the_single_mask_token_unless_the_fallback_is_asked_for",
                               "test_pseudo_labels_respect_threshold_and_cap",
                               "test_an_images_loss_does_not_depend_on_its_batch",
                               "test_proposal_head_gets_gradients_unlike_with_the_library_loss"},
    "test_plan.py": {"test_measured_step_times_train_a_few_steps_and_write_no_run",
                     "test_student_encoder_flops_match_a_vit_closed_form"},
    "test_synthetic.py": {"test_synth_command_line_writes_a_readable_set"},
    "test_rel_disk.py": {"test_a_full_disk_during_training_is_one_error_naming_the_checkpoint_folder"},
    "test_rel_doctor.py": {"test_doctor_reports_an_image_in_both_the_labelled_and_the_unlabelled_split"},
}
# notebooks: the test executes notebooks (papermill), itself or through the module fixture ``executed``
NOTEBOOK_TESTS = {"test_notebooks.py": {"test_notebooks_command_writes_tables_and_figures_under_its_results_folder"}}
TIERS = ("unit", "integration", "notebooks", "slow", "gpu", "browser")
CUDA_REASON = "needs a CUDA device"  # the reason of the skipif that marked CUDA-only tests before the gpu tier


def _tier(item: pytest.Item) -> str:
    file, name = item.path.name, getattr(item, "originalname", item.name)
    if any(mark.name == "skipif" and CUDA_REASON in str(mark.kwargs.get("reason", ""))
           for mark in item.iter_markers()):
        return "gpu"
    if "executed" in getattr(item, "fixturenames", ()) or name in NOTEBOOK_TESTS.get(file, ()):
        return "notebooks"
    if file in INTEGRATION_FILES or name in INTEGRATION_TESTS.get(file, ()):
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config, items):
    """One tier marker per test (a tier marker written on the test itself wins: slow, gpu, browser, or any other);
    gpu tests are skipped without CUDA."""
    modules = {item.path.name: item.module for item in items if getattr(item, "module", None) is not None}
    stale = [f"{file}::{name}" for table in (INTEGRATION_TESTS, NOTEBOOK_TESTS) for file, tests in table.items()
             if file in modules for name in sorted(tests) if not hasattr(modules[file], name)]
    if stale:  # a test renamed or removed: its tier would fall back to unit silently
        raise pytest.UsageError(f"tests/conftest.py names test(s) that do not exist: {stale}; update the tier tables")
    for item in items:
        own = [t for t in TIERS if item.get_closest_marker(t)]
        tier = own[0] if own else _tier(item)
        if not own:
            item.add_marker(tier)
        if (tier == "gpu" or "gpu" in own) and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="gpu tier: needs a CUDA device"))


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory):
    return generate(CITYSCAPES_SPEC, tmp_path_factory.mktemp("data") / "cityscapes")


@pytest.fixture(scope="session")
def ade20k_root(tmp_path_factory):
    return generate(ADE20K_SPEC, tmp_path_factory.mktemp("data") / "ade20k")


@pytest.fixture(scope="session")
def cfg():
    """The smoke profile as shipped (tests that write data use ``smoke_config``)."""
    return load_config("smoke")


@pytest.fixture
def smoke_config(tmp_path):
    """The smoke profile with its data and split folders in a temporary directory."""

    def make(*overrides: str):
        return load_config("smoke", [f"data.data_dir={tmp_path / 'data'}", f"data.splits_dir={tmp_path / 'splits'}",
                                     *overrides])

    return make
