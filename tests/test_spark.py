"""The Spark path (lurm_lite.spark): BoI of eq. (4) equal to build_boi, its Parquet read back
for a shard of users, R^ equal to encode_users, and clear errors on bad behaviours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

pytest.importorskip("pyspark", reason="PySpark is not installed: pip install -e '.[spark]'")
from lurm_lite import spark as lurm_spark  # noqa: E402  (after the skip)

if lurm_spark.java_missing():
    pytest.skip(lurm_spark.java_missing(), allow_module_level=True)

from data_prep import synthetic  # noqa: E402
from lurm_lite.boi import BoISequences, build_boi, load_boi_parquet  # noqa: E402
from lurm_lite.config import SMENConfig, UserTrainingConfig  # noqa: E402
from lurm_lite.user_training import encode_users, train_smen  # noqa: E402

GRANULARITIES = ("month", "year", "7d")
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


@pytest.fixture(scope="module")
def spark():
    session = lurm_spark.session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny synthetic behaviours (300 users) with their true item topics as interests (D = 100)."""
    root = synthetic.generate(tmp_path_factory.mktemp("synthetic"), scale="tiny", seed=0)
    behaviors = pd.read_parquet(root / "behaviors.parquet")
    topic = np.load(root / "ground_truth" / "item_topic.npy")
    return behaviors, topic, int(topic.max()) + 1


def soft_assignment(topic: np.ndarray, D: int) -> sp.csr_matrix:
    """Each item 0.7 on its topic and 0.3 on the next one (rows sum to 1)."""
    n = len(topic)
    rows, cols = np.repeat(np.arange(n), 2), np.stack([topic, (topic + 1) % D], axis=1).ravel()
    return sp.csr_matrix((np.tile([0.7, 0.3], n).astype(np.float32), (rows, cols)), shape=(n, D))


def assert_same_boi(got: BoISequences, want: BoISequences) -> None:
    for name in ("user_ids", "user_ptr", "period"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
        assert getattr(got, name).dtype == getattr(want, name).dtype, name
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got.matrix, name), getattr(want.matrix, name), err_msg=name)
        assert getattr(got.matrix, name).dtype == getattr(want.matrix, name).dtype, name
    assert got.matrix.shape == want.matrix.shape and got.granularity == want.granularity


@pytest.fixture(scope="module")
def hard_boi(spark, data, tmp_path_factory):
    """Spark BoI (hard) from three Parquet files, users shuffled across them."""
    behaviors, topic, D = data
    folder = tmp_path_factory.mktemp("files")
    shuffled = behaviors.sample(frac=1.0, random_state=0)
    for k, rows in enumerate(np.array_split(np.arange(len(shuffled)), 3)):
        shuffled.iloc[rows].to_parquet(folder / f"part-{k}.parquet", index=False)
    out = tmp_path_factory.mktemp("boi") / "hard"
    lurm_spark.write_boi(lurm_spark.boi_frame(spark, folder, topic, D, GRANULARITIES), out)
    return out


def test_spark_boi_equals_build_boi_hard_from_several_files(data, hard_boi):
    behaviors, topic, D = data
    want = build_boi(behaviors.user_id.to_numpy(), behaviors.item_id.to_numpy(), behaviors.ts.to_numpy(),
                     topic, D, GRANULARITIES)
    for g in GRANULARITIES:
        assert_same_boi(load_boi_parquet(hard_boi, g, D), want[g])


def test_spark_boi_equals_build_boi_soft_from_a_partitioned_dataset(spark, data, tmp_path):
    behaviors, topic, D = data
    partitioned = behaviors.assign(shard=behaviors.user_id % 4)
    pq.write_to_dataset(pa.Table.from_pandas(partitioned, preserve_index=False), tmp_path / "by_shard",
                        partition_cols=["shard"])
    soft = soft_assignment(topic, D)
    granularities = ("month", "30d")
    lurm_spark.write_boi(lurm_spark.boi_frame(spark, tmp_path / "by_shard", soft, D, granularities), tmp_path / "boi")
    want = build_boi(behaviors.user_id.to_numpy(), behaviors.item_id.to_numpy(), behaviors.ts.to_numpy(),
                     soft, D, granularities)
    for g in granularities:
        assert_same_boi(load_boi_parquet(tmp_path / "boi", g, D), want[g])


def test_load_boi_parquet_reads_one_shard_of_users(data, hard_boi):
    behaviors, topic, D = data
    shard = np.unique(behaviors.user_id)[::7][::-1]  # every 7th user, in any order
    mine = behaviors[behaviors.user_id.isin(shard)]
    want = build_boi(mine.user_id.to_numpy(), mine.item_id.to_numpy(), mine.ts.to_numpy(), topic, D, ("year",))
    assert_same_boi(load_boi_parquet(hard_boi, "year", D, user_ids=shard), want["year"])
    with pytest.raises(ValueError, match=r"no granularity=30d/ folder \(found: 7d, month, year\)"):
        load_boi_parquet(hard_boi, "30d", D)


def test_spark_encoding_equals_encode_users(spark, data, hard_boi, tmp_path):
    """R^ of a tiny trained SMEN, whole-life window ending at the data's last month for every
    executor (not each batch's own last month)."""
    _, _, D = data
    boi = {g: load_boi_parquet(hard_boi, g, D) for g in ("month", "year")}
    model, _ = train_smen(boi, SMENConfig(hidden=8, anchors=3),
                          UserTrainingConfig(batch_size=64, epochs=1, min_subseq_periods=4, max_periods=24),
                          "cpu", seed=0, progress=False)
    user_ids = boi["month"].user_ids
    want = encode_users(model, boi, user_ids, "cpu")
    lurm_spark.write_user_reps(lurm_spark.encode_frame(spark, hard_boi, model, batch_size=16), tmp_path / "reps")
    got_ids, got = lurm_spark.load_user_reps_parquet(tmp_path / "reps")
    np.testing.assert_array_equal(got_ids, user_ids)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.abs(want).sum(1).min() > 0  # every user encoded, none left as the empty sequence


def test_missing_column_names_the_path_the_field_and_an_example(spark, data, tmp_path):
    behaviors, topic, D = data
    behaviors.drop(columns="ts").to_parquet(tmp_path / "no_ts.parquet", index=False)
    with pytest.raises(ValueError, match=r"no_ts\.parquet: no column 'ts'.*ts=1199145600"):
        lurm_spark.boi_frame(spark, tmp_path / "no_ts.parquet", topic, D)


def test_a_file_lacking_a_column_among_several_fails_naming_that_file(spark, data, tmp_path):
    behaviors, topic, D = data
    folder = tmp_path / "mixed"
    folder.mkdir()
    behaviors.iloc[:100].to_parquet(folder / "good.parquet", index=False)
    behaviors.iloc[100:200].drop(columns="ts").to_parquet(folder / "bad_no_ts.parquet", index=False)
    with pytest.raises(Exception, match=r"null or missing 'ts' in .*bad_no_ts\.parquet"):
        lurm_spark.write_boi(lurm_spark.boi_frame(spark, folder, topic, D, ("month",)), tmp_path / "boi")


def test_session_without_java_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(lurm_spark.JavaMissing, match="openjdk-17-jre-headless"):
        lurm_spark.session()
