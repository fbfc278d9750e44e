"""The synthetic default dataset: valid, deterministic, shaped as documented, ground truth consistent."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from data_prep.schema import date_to_ts, load_dataset, task_labels, validate
from data_prep.synthetic import AGE_GROUPS, BABY_AGES, FUTURE_TASK_CATEGORIES, SCALES, generate, ground_truth_topics


@pytest.fixture(scope="module")
def ds(tiny_dataset):
    return validate(tiny_dataset)


def test_deterministic_given_seed(tmp_path, tiny_dataset):
    t0 = time.perf_counter()
    again = load_dataset(generate(tmp_path / "again", scale="tiny", seed=0))
    assert time.perf_counter() - t0 < 3.0
    first = load_dataset(tiny_dataset)
    for name in ("items", "behaviors", "users"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(np.load(tiny_dataset / "ground_truth/item_topic.npy"),
                                  np.load(tmp_path / "again/ground_truth/item_topic.npy"))
    other = load_dataset(generate(tmp_path / "other", scale="tiny", seed=1))
    assert not first.behaviors["item_id"].head(1000).equals(other.behaviors["item_id"].head(1000))


def test_tiny_shape_and_ranges(ds):
    cfg = SCALES["tiny"]
    assert len(ds.users) == cfg.n_users and len(ds.items) == cfg.n_items
    assert 20_000 <= len(ds.behaviors) <= 50_000
    words = ds.items["title"].str.split().str.len()
    assert words.min() >= 3 and words.max() <= 60 and words.quantile(0.95) < 40
    assert set(ds.users["age_group"]) == set(AGE_GROUPS)
    assert set(ds.users["baby_age"].dropna()) == set(BABY_AGES) and ds.users["baby_age"].isna().any()
    per_user = ds.behaviors.groupby("user_id").size()
    assert per_user.max() > 10 * per_user.median()  # heavy tail
    assert ds.meta["history_end"] == "2018-01-01" and ds.meta["label_end"] == "2018-11-01"
    assert ds.behaviors["ts"].min() >= ds.history_start_ts and ds.behaviors["ts"].max() < ds.label_end_ts
    for name, stats in ds.meta["summary"]["tasks"].items():
        if name.startswith("future_"):
            assert 0.15 <= stats["positive_rate"] <= 0.6, (name, stats)
    assert {t["name"] for t in ds.tasks} >= {"age", "baby_age"}


def test_each_category_task_has_an_active_population_twin(ds):
    names = [t["name"] for t in ds.tasks]
    assert names == [f"future_{c}{suffix}" for c in FUTURE_TASK_CATEGORIES for suffix in ("", "_active")] + [
        "age", "baby_age"]
    for c in FUTURE_TASK_CATEGORIES:
        rule = next(t["rule"] for t in ds.tasks if t["name"] == f"future_{c}_active")
        assert rule == {"future_category": c, "population": "active_in_label_window"}


def test_active_task_users_have_history_and_label_window_behaviour(ds, tiny_dataset):
    """By hand from behaviors.parquet: the active population is history users who also act after history_end."""
    behaviors = pd.read_parquet(tiny_dataset / "behaviors.parquet")
    ts = behaviors["ts"].to_numpy()
    in_history = (ts >= date_to_ts("2008-01-01")) & (ts < date_to_ts("2018-01-01"))
    in_label = (ts >= date_to_ts("2018-01-01")) & (ts < date_to_ts("2018-11-01"))
    history_users = set(behaviors["user_id"][in_history])
    active = sorted(history_users & set(behaviors["user_id"][in_label]))
    assert 0 < len(active) < len(history_users)  # churned or quiet users exist and are left out
    for c in FUTURE_TASK_CATEGORIES:
        all_users, y_all = task_labels(ds, next(t for t in ds.tasks if t["name"] == f"future_{c}"))
        users, y = task_labels(ds, next(t for t in ds.tasks if t["name"] == f"future_{c}_active"))
        assert users.tolist() == active and all_users.tolist() == sorted(history_users)
        # same label, smaller population: every positive of the full task is active
        np.testing.assert_array_equal(y, y_all[np.isin(all_users, users)])
        assert y_all[~np.isin(all_users, users)].sum() == 0


def test_ground_truth_consistent(ds, tiny_dataset):
    gt = tiny_dataset / "ground_truth"
    item_topic = np.load(gt / "item_topic.npy")
    topic_category = np.load(gt / "topic_category.npy")
    world = json.loads((gt / "world.json").read_text())
    profile = pd.read_parquet(gt / "user_profile.parquet")
    assert item_topic.shape == (len(ds.items),) and item_topic.max() < topic_category.size
    assert np.bincount(item_topic).min() >= 1  # every topic has an item
    categories = np.array(world["categories"])[topic_category[item_topic]]
    assert (categories == ds.items["category"].to_numpy()).all()
    assert profile["user_id"].tolist() == ds.users["user_id"].tolist()
    assert (np.array(AGE_GROUPS)[profile["age_group"]] == ds.users["age_group"].to_numpy()).all()
    assert (profile["has_child"].to_numpy() == ds.users["baby_age"].notna().to_numpy()).all()


def test_sessions_share_latent_interest(ds, tiny_dataset):
    """Items of one user within beta = 5 days mostly share the topic; random pairs rarely."""
    topic = np.load(tiny_dataset / "ground_truth/item_topic.npy")[ds.behaviors["item_id"].to_numpy()]
    user, ts = ds.behaviors["user_id"].to_numpy(), ds.behaviors["ts"].to_numpy()
    close = (user[1:] == user[:-1]) & (ts[1:] - ts[:-1] < 5 * 86_400)
    same_close = (topic[1:] == topic[:-1])[close].mean()
    same_random = (topic == np.random.default_rng(0).permutation(topic)).mean()
    assert same_close > 0.4 and same_close > 10 * same_random


def test_baby_interests_follow_child_age(ds, tiny_dataset):
    """Baby-topic behaviours happen while the child is in that topic's child-age window."""
    gt = tiny_dataset / "ground_truth"
    world = json.loads((gt / "world.json").read_text())
    profile = pd.read_parquet(gt / "user_profile.parquet").set_index("user_id")
    window = dict(zip(world["baby_topics"], world["baby_topic_child_age_window"], strict=True))
    topic = np.load(gt / "item_topic.npy")[ds.behaviors["item_id"].to_numpy()]
    is_baby = np.isin(topic, world["baby_topics"])
    b = ds.behaviors[is_baby]
    birth = profile.loc[b["user_id"], "child_birth_ts"].to_numpy()
    child_age = (b["ts"].to_numpy() - birth) / (365.25 * 86_400)
    lo = np.array([window[t][0] for t in topic[is_baby]])
    hi = np.array([window[t][1] for t in topic[is_baby]])
    inside = (child_age >= lo - 0.5) & (child_age < hi + 0.5)  # nan (noise, no child) counts as outside
    assert inside.mean() > 0.6


def test_ground_truth_topics_names_each_topic_by_category_and_baby(tmp_path):
    gt = tmp_path / "ground_truth"
    gt.mkdir()
    np.save(gt / "item_topic.npy", np.array([2, 0, 1], dtype=np.int64))
    np.save(gt / "topic_category.npy", np.array([0, 1, 1], dtype=np.int64))
    (gt / "world.json").write_text(json.dumps({"categories": ["Books", "Baby"], "baby_topics": [2]}))
    item_topic, names = ground_truth_topics(tmp_path)
    assert item_topic.tolist() == [2, 0, 1]
    assert names == ["topic 0 (Books)", "topic 1 (Baby)", "topic 2 (Baby, baby)"]
    assert ground_truth_topics(tmp_path / "elsewhere") is None
