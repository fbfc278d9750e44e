import pytest

from lurm_lite.config import (
    ITEMS_PER_INTEREST,
    PAPER_LENGTHS_MONTHS,
    AnalysisConfig,
    ClusteringConfig,
    ConfigError,
    DataLimit,
    ItemEmbeddingConfig,
    clustering_for_data,
    fit_to_data,
    for_scale,
    item_config_for_data,
    with_overrides,
)


def test_preset_d_is_capped_at_items_per_interest_and_reported():
    config, caps = clustering_for_data(for_scale("default").clustering, n_items=148)
    assert config.n_interests == 148 // ITEMS_PER_INTEREST == 18 and config.sample_size == 148
    assert [(c["parameter"], c["field"], c["preset"], c["used"]) for c in caps] == [
        ("KMEANS_SAMPLE_SIZE", "sample_size", 200_000, 148), ("N_INTERESTS", "n_interests", 1000, 18)]
    assert "148 items" in caps[1]["reason"]


def test_preset_that_fits_the_data_is_unchanged():
    preset = for_scale("paper").clustering
    config, caps = clustering_for_data(preset, n_items=2_000_000)
    assert config == preset and caps == []
    config, caps = clustering_for_data(for_scale("default").clustering, n_items=20_000)
    assert config.n_interests == 1000 and [c["field"] for c in caps] == ["sample_size"]  # all 20,000 items


def test_d_cap_counts_only_the_items_kmeans_samples():
    config, _ = clustering_for_data(ClusteringConfig(n_interests=1000, sample_size=800), n_items=5000)
    assert config.n_interests == 100
    config, caps = clustering_for_data(ClusteringConfig(n_interests=1000), n_items=5000, sample_size=400)
    assert (config.sample_size, config.n_interests) == (400, 50) and caps[0]["parameter"] == "N_INTERESTS"
    config, caps = clustering_for_data(ClusteringConfig(n_interests=10), n_items=5000, sample_size=10**6)
    assert config.sample_size == 10**6 and caps == []  # the user's larger sample runs (all items)


def test_user_set_d_is_kept_when_it_can_run_and_named_when_it_cannot():
    config, caps = clustering_for_data(for_scale("default").clustering, n_items=148, n_interests=60)
    assert config.n_interests == 60 and "n_interests" not in {c["field"] for c in caps}  # k-means can run it
    with pytest.raises(ConfigError, match=r"N_INTERESTS = 1000 cannot run .* at most 148; set e.g. -p N_INTERESTS 18"):
        clustering_for_data(for_scale("default").clustering, n_items=148, n_interests=1000)
    with pytest.raises(ConfigError, match="at least 1; set e.g. -p N_INTERESTS 18"):
        clustering_for_data(for_scale("default").clustering, n_items=148, n_interests=0)


def test_soft_top_k_follows_the_capped_d():
    config, caps = clustering_for_data(ClusteringConfig(n_interests=50, soft_top_k=3), n_items=10)
    assert (config.n_interests, config.soft_top_k) == (1, 1)
    assert [c["parameter"] for c in caps] == ["KMEANS_SAMPLE_SIZE", "N_INTERESTS", "SOFT_TOP_K"]
    with pytest.raises(ConfigError, match="-p SOFT_TOP_K"):
        clustering_for_data(ClusteringConfig(n_interests=50), n_items=1000, soft_top_k=80)


def test_item_batch_is_capped_by_items_and_pairs():
    config, caps = item_config_for_data(for_scale("default").item, n_items=148)
    assert config.batch_size == 74 and caps[0]["parameter"] == "ITEM_BATCH_SIZE"
    config, _ = item_config_for_data(ItemEmbeddingConfig(batch_size=1024), n_items=100_000, pairs_per_epoch=300)
    assert config.batch_size == 300
    config, caps = item_config_for_data(ItemEmbeddingConfig(), n_items=148, batch_size=500)
    assert config.batch_size == 500 and caps == []  # the user's choice runs (with many repeated items)
    with pytest.raises(ConfigError, match="-p ITEM_BATCH_SIZE"):
        item_config_for_data(ItemEmbeddingConfig(), n_items=148, batch_size=1)


def test_fit_to_data_leaves_unlimited_fields_alone():
    limit = DataLimit("epochs", "ITEM_EPOCHS", preset_max=2, reason="test")
    config, caps = fit_to_data(ItemEmbeddingConfig(epochs=3), [limit], user_set={})
    assert config.epochs == 2 and config.dim == ItemEmbeddingConfig().dim and caps[0]["preset"] == 3


def test_analysis_config_is_set_per_scale_and_overridden_like_the_other_stages():
    tiny, default, paper = (for_scale(s).analysis for s in ("tiny", "default", "paper"))
    assert paper == AnalysisConfig() and paper.lengths_months == PAPER_LENGTHS_MONTHS  # §3.6's sweeps
    assert "1anchor-MH" in paper.variants and "1anchor-MH" not in default.variants  # an hour per variant on 2 cores
    assert tiny.ablation_epochs <= default.ablation_epochs < paper.ablation_epochs
    for scale, analysis in (("tiny", tiny), ("default", default), ("paper", paper)):  # 04 keeps the snapshot 08 reads
        assert analysis.ablation_epochs < for_scale(scale).user_training.epochs
    assert max(tiny.n_interests_sweep) <= for_scale("tiny").clustering.n_interests
    assert for_scale("default").to_dict()["analysis"]["n_interests_sweep"] == default.n_interests_sweep
    changed = with_overrides(default, ablation_epochs=5, n_interests_sweep=[], variants=None)
    assert (changed.ablation_epochs, changed.n_interests_sweep, changed.variants) == (5, [], default.variants)
    with pytest.raises(TypeError, match="AnalysisConfig has no field.*d_sweep"):
        with_overrides(default, d_sweep=(10,))
