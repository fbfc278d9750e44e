"""results.json: collect, schema check, load, save, and the one table (Markdown and DataFrame)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from lurm_lite.downstream import TaskResults
from lurm_lite.results import (collect_results, load_results, markdown_table, results_markdown, results_table,
                               save_results, table_frame, validate_results)
from lurm_lite.io import load_json

PER_METHOD = {
    "TF-IDF": {"t1": {"auc": 0.7862, "acc": 0.7721, "auc_ci95": [0.75, 0.81], "n_test": 40},
               "t2": {"auc": 0.60, "acc": 0.55, "auc_ci95": [0.5, 0.7], "n_test": 40}},
    "LURM": {"t1": {"auc": 0.8255, "acc": 0.7500, "auc_ci95": [0.80, 0.85], "n_test": 40}},
}


def _two_method_results() -> dict:
    return collect_results("toy", 0, PER_METHOD)


def test_good_results_round_trip_through_the_files(tmp_path):
    results = _two_method_results()
    assert results["skipped"] == {}
    json_path, md_path = save_results(results, tmp_path / "results.json")
    loaded = load_results(json_path)
    assert loaded == results
    assert loaded["tasks"]["t1"]["LURM"] == {"auc": 0.8255, "acc": 0.75, "auc_ci95": [0.8, 0.85], "n_test": 40}
    assert md_path.read_text() == results_markdown(loaded)
    old_file = {k: v for k, v in results.items() if k not in ("skipped", "supervised")}  # written before they existed
    validate_results(old_file)


def test_supervised_methods_are_listed_and_marked_in_every_table(tmp_path):
    per_method = {"HAN": {"t1": dict(PER_METHOD["LURM"]["t1"], train_seconds=3.5, epochs=4)}, **PER_METHOD}
    results = collect_results("toy", 0, per_method, supervised=("TextCNN", "HAN"))
    assert results["supervised"] == ["HAN"]  # only the evaluated ones, in table order
    assert set(results["tasks"]["t1"]["HAN"]) == {"auc", "acc", "auc_ci95", "n_test"}  # extra keys left out
    _, md_path = save_results(results, tmp_path / "results.json")
    assert list(results_table(results).index) == ["HAN †", "TF-IDF", "LURM"]
    assert "| HAN † | **82.55**/75.00 |" in md_path.read_text() and "†: trained end to end" in md_path.read_text()
    assert "†" not in results_markdown(_two_method_results())


def test_collect_results_casts_and_records_the_skipped_tasks_of_any_method(tmp_path):
    metrics = {"auc": np.float32(0.75), "acc": np.float64(0.5), "auc_ci95": (np.float32(0.7), 0.8),
               "n_test": np.int64(60)}
    per_method = {"A": TaskResults({"fine": metrics}, {"rare": "5 positives"}),
                  "B": TaskResults({"fine": metrics}, {"rare": "another reason", "constant": "one label"})}
    results = collect_results("stub", np.int64(3), per_method)
    assert results["skipped"] == {"rare": "5 positives", "constant": "one label"}
    assert list(results["tasks"]["fine"]) == ["A", "B"]
    assert json.loads(json.dumps(results)) == results  # plain JSON types only
    assert type(results["tasks"]["fine"]["A"]["n_test"]) is int and type(results["split_seed"]) is int
    _, md_path = save_results(results, tmp_path / "results.json")
    assert md_path.read_text().endswith("\n\nSkipped tasks: rare: 5 positives; constant: one label.\n")


def _set(*path_and_value):
    *path, value = path_and_value

    def breakage(doc):
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value
    return breakage


def _drop(*path):
    def breakage(doc):
        for key in path[:-1]:
            doc = doc[key]
        del doc[path[-1]]
    return breakage


LURM_T1 = ("tasks", "t1", "LURM")


@pytest.mark.parametrize("breakage, message", [
    (_drop("split_seed"), "split_seed is missing"),
    (_drop("dataset"), "dataset is missing"),
    (_set("dataset", 3), "dataset must be a string, got 3"),
    (_set("split_seed", True), "split_seed must be an integer, got True"),
    (_set("split_seed", 0.0), "split_seed must be an integer, got 0.0"),
    (_set("splitseed", 0), "splitseed is not a field (expected dataset, split_seed, tasks, skipped, supervised)"),
    (_set("tasks", []), "tasks must be an object {task: {method: metrics}}, got []"),
    (_set("tasks", "t1", None), "tasks['t1'] must be an object {method: metrics}, got None"),
    (_set(*LURM_T1, [0.8]), "tasks['t1']['LURM'] must be an object {auc, acc, auc_ci95, n_test}, got [0.8]"),
    (_set(*LURM_T1, "auc", 1.2), "tasks['t1']['LURM']['auc'] must be a fraction in [0, 1], got 1.2"),
    (_set(*LURM_T1, "auc", 81.0), "tasks['t1']['LURM']['auc'] must be a fraction in [0, 1], got 81.0"),
    (_set(*LURM_T1, "acc", -0.1), "tasks['t1']['LURM']['acc'] must be a fraction in [0, 1], got -0.1"),
    (_set(*LURM_T1, "acc", True), "tasks['t1']['LURM']['acc'] must be a fraction in [0, 1], got True"),
    (_set(*LURM_T1, "acc", "0.7"), "tasks['t1']['LURM']['acc'] must be a fraction in [0, 1], got '0.7'"),
    (_set(*LURM_T1, "acc", float("nan")), "tasks['t1']['LURM']['acc'] must be a fraction in [0, 1], got nan"),
    (_set(*LURM_T1, "auc_ci95", [0.8]),
     "tasks['t1']['LURM']['auc_ci95'] must be a list [lo, hi] of two numbers, got [0.8]"),
    (_set(*LURM_T1, "auc_ci95", (0.8, 0.9)),
     "tasks['t1']['LURM']['auc_ci95'] must be a list [lo, hi] of two numbers, got (0.8, 0.9)"),
    (_set(*LURM_T1, "auc_ci95", [0.8, False]), "tasks['t1']['LURM']['auc_ci95'][1] must be a number, got False"),
    (_set(*LURM_T1, "n_test", "40"), "tasks['t1']['LURM']['n_test'] must be a positive integer, got '40'"),
    (_set(*LURM_T1, "n_test", 0), "tasks['t1']['LURM']['n_test'] must be a positive integer, got 0"),
    (_set(*LURM_T1, "n_test", 40.0), "tasks['t1']['LURM']['n_test'] must be a positive integer, got 40.0"),
    (_set(*LURM_T1, "n_test", True), "tasks['t1']['LURM']['n_test'] must be a positive integer, got True"),
    (_drop(*LURM_T1, "acc"), "tasks['t1']['LURM']['acc'] is missing"),
    (_set(*LURM_T1, "f1", 0.5), "tasks['t1']['LURM']['f1'] is not a field (expected auc, acc, auc_ci95, n_test)"),
    (_set("skipped", ["t3"]), "skipped must be an object {task: reason}, got ['t3']"),
    (_set("skipped", {"t3": ""}), "skipped['t3'] must be a non-empty reason, got ''"),
    (_set("skipped", {"t3": None}), "skipped['t3'] must be a non-empty reason, got None"),
    (_set("skipped", {"t3": "too few", "t1": "too few"}),
     "skipped['t1'] names a task that also has results in 'tasks'"),
    (_set("supervised", "TF-IDF"), "supervised must be a list of method names, got 'TF-IDF'"),
    (_set("supervised", ["HAN", ""]), "supervised[1] must be a method name, got ''"),
])
def test_validate_results_names_the_first_offending_field(breakage, message):
    doc = copy.deepcopy(_two_method_results())
    breakage(doc)
    with pytest.raises(ValueError) as caught:
        validate_results(doc)
    assert str(caught.value) == f"results.json: {message}"


def test_validate_results_rejects_a_top_level_that_is_not_an_object():
    with pytest.raises(ValueError, match=r"^results\.json: the top level must be an object \{dataset, split_seed"):
        validate_results([])


def test_the_first_offence_in_document_order_is_reported():
    doc = copy.deepcopy(_two_method_results())
    doc["tasks"]["t1"]["TF-IDF"]["auc"] = 2.0
    doc["tasks"]["t2"]["TF-IDF"]["auc"] = 3.0
    doc["split_seed"] = "zero"  # split_seed comes before tasks in the schema
    with pytest.raises(ValueError, match=r"split_seed must be an integer"):
        validate_results(doc)
    doc["split_seed"] = 0
    with pytest.raises(ValueError, match=r"tasks\['t1'\]\['TF-IDF'\]\['auc'\] .* got 2\.0$"):
        validate_results(doc)


def test_load_results_names_the_file(tmp_path):
    broken = _two_method_results()
    broken["tasks"]["t2"]["TF-IDF"]["n_test"] = -1
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError) as caught:
        load_results(path)
    assert str(caught.value) == f"{path}: tasks['t2']['TF-IDF']['n_test'] must be a positive integer, got -1"
    path.write_text('{"dataset": ')
    with pytest.raises(ValueError, match=rf"^{path}: not JSON"):
        load_results(path)
    with pytest.raises(ValueError, match="results.json: tasks"):
        save_results(broken, tmp_path / "results.json")  # nothing invalid is written
    assert not (tmp_path / "results.json").exists()


# --- the table --------------------------------------------------------------------------


def test_markdown_table_bolds_the_best_per_task_and_lists_skipped_tasks():
    results = _two_method_results()
    results["skipped"] = {"t3": "too few users"}
    assert results_markdown(results) == (
        "Results on toy (AUC(%)/ACC(%), split seed 0); the best score per task is bold.\n\n"
        "| Method | t1 | t2 |\n"
        "| --- | --- | --- |\n"
        "| TF-IDF | 78.62/**77.21** | **60.00**/**55.00** |\n"
        "| LURM | **82.55**/75.00 | - |\n"
        "\n"
        "Skipped tasks: t3: too few users.\n")


def test_ties_are_all_bold_after_rounding():
    per_method = {"A": {"t": {"auc": 0.80001, "acc": 0.5}}, "B": {"t": {"auc": 0.8, "acc": 0.6}}}
    assert list(table_frame(per_method)["t"]) == ["**80.00**/50.00", "**80.00**/**60.00**"]


def test_dataframe_and_markdown_are_one_table():
    results = _two_method_results()
    frame = results_table(results)
    assert list(frame.index) == ["TF-IDF", "LURM"] and list(frame.columns) == ["t1", "t2"]
    assert frame.loc["LURM", "t2"] == "-" and frame.loc["TF-IDF", "t1"] == "78.62/**77.21**"
    assert frame.attrs["skipped"] == {}
    assert results_markdown(results).endswith(markdown_table(frame))
    # table_frame: the same table from {method: {task: metrics}} (notebook 08's layout)
    assert table_frame(PER_METHOD).equals(frame)
    per_method = {"A": TaskResults({"t1": PER_METHOD["LURM"]["t1"]}, {"rare": "5 positives"})}
    assert table_frame(per_method).attrs["skipped"] == {"rare": "5 positives"}
    assert markdown_table(table_frame(per_method)).endswith("\n\nSkipped tasks: rare: 5 positives.\n")


def test_everything_skipped_renders_no_table_but_the_reasons(tmp_path):
    results = collect_results("stub", 0, {"A": TaskResults({}, {"rare": "too few"})})
    assert results["tasks"] == {} and results["skipped"] == {"rare": "too few"}
    _, md_path = save_results(results, tmp_path / "results.json")
    markdown = md_path.read_text()
    assert "No task could be evaluated." in markdown and "| Method |" not in markdown
    assert markdown.endswith("Skipped tasks: rare: too few.\n")
    assert load_json(tmp_path / "results.json")["skipped"] == {"rare": "too few"}
