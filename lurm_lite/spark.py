"""BoI (eq. 4) and SMEN encoding (§2.2) on Apache Spark: logs past one machine.

The paper's industrial logs hold hundreds of millions of users; what makes them tractable
is that both stages split: BoI is a group-by of behaviours on (user, period, interest), and
R^ (eq. 7) of one user needs that user's b_t only. Both run here as Spark jobs whose
results equal the in-memory path (:func:`lurm_lite.boi.build_boi`,
:func:`lurm_lite.user_training.encode_users`):

- :func:`boi_frame` / :func:`write_boi`: behaviours Parquet -> one row per non-empty
  (user, period) with b_t as ``indices`` (interests j, ascending) and ``values``
  (b_t,j = log(1 + count)), every granularity in one job, written as
  ``out/granularity=<g>/part-*.parquet``. :func:`lurm_lite.boi.load_boi_parquet` reads any
  shard of users back without Spark.
- :func:`encode_frame` / :func:`write_user_reps`: those rows -> ``user_id, representation``
  (R^ flattened, M*H floats) with the model broadcast once and users encoded in Arrow
  batches by ``mapInArrow``.
- :func:`session`: a ``local[2]`` SparkSession by default, any master or builder otherwise.

Needs the optional extra (``pip install 'lurm_lite[spark]'``) and Java 17.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import warnings
import weakref
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from lurm_lite.boi import boi_from_arrow
from lurm_lite.periods import DAY_SECONDS, LIFE, parse_granularity, period_start_ts
from lurm_lite.smen import SMEN
from lurm_lite.user_training import encode_users

try:
    from pyspark import TaskContext
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError as err:  # the optional extra
    raise ImportError("lurm_lite.spark needs PySpark: pip install 'lurm_lite[spark]' (or 'pyspark>=3.5')") from err

BEHAVIOR_COLUMNS = ("user_id", "item_id", "ts")  # the data contract, data_prep/schema.py
BEHAVIOR_EXAMPLE = "user_id=42 (int64), item_id=7 (int32), ts=1199145600 (int64 unix seconds UTC)"
BOI_SCHEMA = "granularity string, user_id long, period long, indices array<int>, values array<float>"
REPS_SCHEMA = "user_id long, representation array<float>"
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_LOCAL_DEFAULTS = {  # a laptop or CI run: quiet, no web UI, few shuffle partitions, Arrow transfers
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


class JavaMissing(RuntimeError):
    """Spark's driver runs on a Java virtual machine and none was found."""


def java_missing() -> str | None:
    """Why Spark cannot start here (no ``java`` on PATH or in JAVA_HOME), or None."""
    java_home = os.environ.get("JAVA_HOME")
    if (java_home and Path(java_home, "bin", "java").exists()) or shutil.which("java"):
        return None
    return ("Spark needs Java 17 and no `java` was found (PATH, JAVA_HOME). Install a JRE: "
            "`sudo apt-get install -y openjdk-17-jre-headless` (Debian/Ubuntu), `brew install openjdk@17` (macOS) "
            "or `conda install -c conda-forge openjdk=17`, or set JAVA_HOME.")


def session(master: str | None = "local[2]", builder: SparkSession.Builder | None = None,
            conf: dict[str, str] | None = None) -> SparkSession:
    """A SparkSession with quiet logs.

    Without ``builder``: ``SparkSession.builder.master(master)`` with the local defaults
    (no web UI, 8 shuffle partitions, Arrow on) and the Python workers on this interpreter.
    With ``builder`` (any master: YARN, Kubernetes, standalone), it is used as given plus
    ``conf``. Raises :class:`JavaMissing`, naming what to install, when there is no Java.
    """
    reason = java_missing()
    if reason:
        raise JavaMissing(reason)
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    if builder is None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers import this lurm_lite
        builder = SparkSession.builder.master(master or "local[2]").appName("lurm_lite")
        conf = {**_LOCAL_DEFAULTS, **(conf or {})}
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# ---------------------------------------------------------------------------------------
# BoI, eq. (4)
# ---------------------------------------------------------------------------------------


def period_column(ts: Column, granularity: str) -> Column:
    """:func:`lurm_lite.periods.period_index` as a Spark column: months since 1970-01 (``month``),
    years since 1970 (``year``), ts // (N days) (``<N>d``), 0 (``life``). Calendar periods
    come from the UTC day (a DATE), so the session time zone plays no part."""
    days = parse_granularity(granularity)
    if granularity in ("month", "year"):
        day = F.date_from_unix_date(F.floor(ts / DAY_SECONDS).cast("int"))
        years = F.year(day) - 1970
        return (years if granularity == "year" else years * 12 + F.month(day) - 1).cast("long")
    if granularity == LIFE:
        return F.lit(0).cast("long")
    return F.floor(ts / (days * DAY_SECONDS)).cast("long")


def read_behaviors(spark: SparkSession, path: str | Sequence[str]) -> DataFrame:
    """The behaviours table (``user_id, item_id, ts``, data_prep/schema.py) from Parquet.

    ``path``: a file, a folder of any number of files, partitioned (``key=value/``) or not,
    or a list of them. Schemas are merged over the files, so a column missing from every
    file fails here, naming the path, and one missing from some files fails the job,
    naming the file (a null there is an error, never a dropped behaviour).
    """
    paths = [str(path)] if isinstance(path, (str, Path)) else [str(p) for p in path]
    frame = spark.read.option("mergeSchema", "true").parquet(*paths)
    types = {field.name: field.dataType for field in frame.schema.fields}
    for name in BEHAVIOR_COLUMNS:
        if name not in types:
            raise ValueError(f"behaviours {', '.join(paths)}: no column {name!r} (columns: {', '.join(types)}); "
                             f"the data contract wants {BEHAVIOR_EXAMPLE}")
        if not isinstance(types[name], _INTEGRAL):
            raise ValueError(f"behaviours {', '.join(paths)}: column {name!r} is {types[name].simpleString()}, "
                             f"not an integer; the data contract wants {BEHAVIOR_EXAMPLE}")
    checked = [F.when(F.col(name).isNull(), F.raise_error(F.concat(
        F.lit(f"behaviours: null or missing {name!r} in "), F.input_file_name(),
        F.lit(f"; the data contract wants {BEHAVIOR_EXAMPLE}")))).otherwise(F.col(name)).alias(name)
        for name in BEHAVIOR_COLUMNS]
    return frame.select(*checked)


def _item_interest_frame(spark: SparkSession, assignment: np.ndarray | sp.spmatrix, n_interests: int) -> DataFrame:
    """item -> interest as rows ``item_id, interest, weight`` (weight 1.0 when hard)."""
    if sp.issparse(assignment):  # soft: every stored weight of the (n_items, D) CSR
        soft = sp.coo_matrix(assignment)
        if soft.shape[1] != n_interests:
            raise ValueError(f"soft assignment has {soft.shape[1]} columns, expected D = {n_interests}")
        item, interest, weight = soft.row, soft.col, soft.data.astype(np.float64)
    else:
        interest = np.asarray(assignment)
        if interest.ndim != 1 or (interest.size and (interest.min() < 0 or interest.max() >= n_interests)):
            raise ValueError(f"hard assignment must be (n_items,) interest ids in [0, D = {n_interests}); "
                             "pass a CSR (n_items, D) for soft")
        item, weight = np.arange(len(interest)), np.ones(len(interest))
    table = pa.table({"item_id": pa.array(item, pa.int32()), "interest": pa.array(interest, pa.int32()),
                      "weight": pa.array(weight, pa.float64())})
    return spark.createDataFrame(table.to_pandas())


def _bag_to_boi(batches: Iterator[pa.RecordBatch], soft: bool) -> Iterator[pa.RecordBatch]:
    """Arrow batches of (granularity, user_id, period, bag = [(interest, count)] ascending)
    -> BoI rows with values b_t,j = log(1 + count), eq. (4).

    The logarithm is numpy's, on build_boi's dtypes (float32 counts when hard, float64 weight
    sums when soft): numpy's float32 log1p differs from a rounded float64 one in the last bit
    for ~1 % of counts, so Spark's own ``log1p`` would not give build_boi's values exactly.
    """
    for batch in batches:
        bag = batch.column("bag")  # list<struct<interest, count>>
        interest, count = bag.flatten().flatten()  # (nnz,) each
        count = count.to_numpy()
        values = np.log1p(count) if soft else np.log1p(count.astype(np.float32))  # (nnz,)
        offsets = pc.subtract(bag.offsets, bag.offsets[0])  # (n_rows + 1,)
        yield pa.RecordBatch.from_arrays(
            [batch.column("granularity"), batch.column("user_id"), batch.column("period"),
             pa.ListArray.from_arrays(offsets, interest),
             pa.ListArray.from_arrays(offsets, pa.array(values.astype(np.float32)))],
            names=["granularity", "user_id", "period", "indices", "values"])


def boi_frame(spark: SparkSession, behaviors: str | Sequence[str] | DataFrame,
              assignment: np.ndarray | sp.spmatrix, n_interests: int,
              granularities: Sequence[str] = ("month", "year"),
              start_ts: int | None = None, end_ts: int | None = None) -> DataFrame:
    """BoI rows of eq. (4) at every granularity, lazily: the plan of :func:`write_boi`.

    One row per non-empty (granularity, user, period): ``indices`` the interests j with a
    behaviour (ascending), ``values`` b_t,j = log(1 + sum of the behaviours' weights on c_j)
    (count when hard). The item -> interest map (``assignment``: (n_items,) ints or an
    (n_items, D) CSR, as for build_boi) is broadcast to every task; each behaviour is
    counted once per granularity (``inline`` of its periods), then two aggregations: counts
    of (granularity, user, period, interest), with partial counts before the shuffle, and
    the bag of each (granularity, user, period). Window: start_ts <= ts < end_ts.

    Equal to :func:`lurm_lite.boi.build_boi` (every row, period and value; soft weights
    are summed in another order, so a soft b_t,j may differ in its float32 last bit where
    the float64 sum falls on a rounding boundary: ~2^-29 per value).
    """
    frame = read_behaviors(spark, behaviors) if not isinstance(behaviors, DataFrame) else behaviors
    if start_ts is not None:
        frame = frame.where(F.col("ts") >= start_ts)
    if end_ts is not None:
        frame = frame.where(F.col("ts") < end_ts)
    soft = sp.issparse(assignment)
    items = _item_interest_frame(spark, assignment, n_interests)
    n_items = assignment.shape[0]
    frame = frame.withColumn("item_id", F.when(  # build_boi would fail on an item outside the map: so here
        (F.col("item_id") < 0) | (F.col("item_id") >= n_items), F.raise_error(F.concat(
            F.lit("behaviours: item_id "), F.col("item_id").cast("string"), F.lit(" in "), F.input_file_name(),
            F.lit(f" lies outside the assignment's items [0, {n_items})")))).otherwise(F.col("item_id")))
    periods = F.array(*[F.struct(F.lit(g).alias("granularity"), period_column(F.col("ts"), g).alias("period"))
                        for g in granularities])
    events = (frame.join(F.broadcast(items), "item_id")
              .select("user_id", "interest", "weight", F.inline(periods)))  # (n * len(granularities),)
    count = F.sum("weight") if soft else F.count(F.lit(1)).cast("double")
    bags = (events.groupBy("granularity", "user_id", "period", "interest").agg(count.alias("count"))
            .groupBy("granularity", "user_id", "period")
            .agg(F.array_sort(F.collect_list(F.struct("interest", "count"))).alias("bag")))
    return bags.mapInArrow(partial(_bag_to_boi, soft=soft), BOI_SCHEMA)


def write_boi(boi: DataFrame, out: str | Path) -> str:
    """Write :func:`boi_frame`'s rows as ``out/granularity=<g>/part-*.parquet``, each file
    sorted by (user_id, period) (replacing ``out``); returns ``out``."""
    (boi.sortWithinPartitions("granularity", "user_id", "period")
     .write.partitionBy("granularity").mode("overwrite").parquet(str(out)))
    return str(out)


# ---------------------------------------------------------------------------------------
# Encoding users, R^ of eq. (7)
# ---------------------------------------------------------------------------------------

_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per Python worker: broadcast -> its SMEN


def _model_bytes(model: SMEN) -> bytes:
    """SMEN's constructor kwargs and state_dict as torch.save bytes: plain data and tensors only."""
    buffer = io.BytesIO()
    torch.save({"kwargs": model.init_kwargs(), "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}},
               buffer)
    return buffer.getvalue()


def _broadcast_model(weights) -> SMEN:
    """The SMEN of broadcast ``weights``, loaded with ``weights_only=True`` once per worker."""
    if weights not in _MODELS:
        saved = torch.load(io.BytesIO(weights.value), weights_only=True)
        model = SMEN(**saved["kwargs"])
        model.load_state_dict(saved["state_dict"])
        _MODELS[weights] = model.eval()
    return _MODELS[weights]


def _encode_batches(batches: Iterator[pa.RecordBatch], weights, scale: str, n_interests: int, end_ts: int,
                    batch_size: int) -> Iterator[pa.RecordBatch]:
    """Arrow batches of users (user_id, rows = [(period, indices, values)] ascending) -> R^."""
    model = _broadcast_model(weights)
    torch.set_num_threads(TaskContext.get().cpus())  # one task, its cores
    for batch in batches:
        batch = batch.take(pc.sort_indices(batch, [("user_id", "ascending")]))  # BoISequences: users ascend
        rows = batch.column("rows")
        per_user = pc.list_value_length(rows).to_numpy(zero_copy_only=False)  # (U,)
        flat = pa.Table.from_arrays(
            [pa.array(np.repeat(batch.column("user_id").to_numpy(), per_user)), *rows.flatten().flatten()],
            names=["user_id", "period", "indices", "values"])  # (n_rows,) sorted by (user, period)
        seqs = boi_from_arrow(flat, scale, n_interests, source="BoI rows of an encoding batch")
        reps = encode_users(model, {scale: seqs}, seqs.user_ids, "cpu", history_end_ts=end_ts,
                            batch_size=batch_size)  # (U, M*H)
        representation = pa.FixedSizeListArray.from_arrays(reps.ravel(), reps.shape[1]).cast(pa.list_(pa.float32()))
        yield pa.RecordBatch.from_arrays([pa.array(seqs.user_ids), representation], names=["user_id", "representation"])


def window_end_ts(spark: SparkSession, boi_path: str | Path, granularity: str) -> int:
    """End (unix s) of the latest ``granularity`` period in the BoI rows: the window end
    :func:`encode_users` takes by default, computed once for every executor."""
    rows = spark.read.parquet(str(boi_path)).where(F.col("granularity") == granularity)
    last = rows.agg(F.max("period")).first()[0]
    if last is None:
        raise ValueError(f"{boi_path}: no BoI rows of granularity {granularity!r}")
    return int(period_start_ts(granularity, np.array([last + 1]))[0])


def encode_frame(spark: SparkSession, boi_path: str | Path, model: SMEN, history_end_ts: int | None = None,
                 batch_size: int = 512) -> DataFrame:
    """R^ (eq. 7) of every user of the BoI rows at ``boi_path``, lazily: ``user_id, representation``.

    Equal (to float rounding, 1e-5) to :func:`lurm_lite.user_training.encode_users` on the
    in-memory BoI, whole-life window: the finest scale's rows (``model.scales[0]``) of each
    user are gathered into one row (a group-by), so one user's periods reach one Python call;
    the coarser scales are summed from them there (``collate_views``). The window ends at
    ``history_end_ts``, by default the end of the latest period in the data
    (:func:`window_end_ts`), the same for every executor. The model (kwargs and weights, plain
    data) is broadcast once; each Arrow batch of users is encoded ``batch_size`` at a time.
    """
    scale = model.scales[0]
    end_ts = window_end_ts(spark, boi_path, scale) if history_end_ts is None else int(history_end_ts)
    weights = spark.sparkContext.broadcast(_model_bytes(model))
    users = (spark.read.parquet(str(boi_path)).where(F.col("granularity") == scale)
             .groupBy("user_id")
             .agg(F.array_sort(F.collect_list(F.struct("period", "indices", "values"))).alias("rows")))
    return users.mapInArrow(partial(_encode_batches, weights=weights, scale=scale, n_interests=model.n_interests,
                                    end_ts=end_ts, batch_size=batch_size), REPS_SCHEMA)


def write_user_reps(reps: DataFrame, out: str | Path) -> str:
    """Write :func:`encode_frame`'s rows as Parquet at ``out`` (replacing it); returns ``out``."""
    reps.write.mode("overwrite").parquet(str(out))
    return str(out)


def load_user_reps_parquet(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(user_ids (n,) int64 ascending, reps (n, M*H) float32) from :func:`write_user_reps`'s
    Parquet, read with pyarrow (no Spark)."""
    table = pq.read_table(str(path), columns=["user_id", "representation"]).sort_by("user_id")
    user_ids = table.column("user_id").to_numpy().astype(np.int64)
    values = pc.list_flatten(table.column("representation")).to_numpy().astype(np.float32)
    return user_ids, values.reshape(len(user_ids), -1)
