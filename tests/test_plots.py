import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from lurm_lite import plots  # noqa: E402


def test_boi_timeline_labels_the_most_used_interests_by_name():
    rows = np.zeros((3, 4))  # (N, D)
    rows[:, 2], rows[0, 0] = 1.0, 0.5  # interest 2 most used, then 0
    names = ["0 Books: murder", "1 Home", "2 Toys: lego", "3"]
    fig = plots.boi_timeline(rows, ["2017-01", "2017-02", "2017-03"], top=2, interest_names=names)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["2 Toys: lego", "0 Books: murder"]
    fig = plots.boi_timeline(rows, ["a", "b", "c"], top=1)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["interest 2"]
