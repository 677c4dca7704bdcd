"""Accuracy-vs-BOPs plots: the Pareto front, the figure's content, the PNG and bad input."""

import matplotlib.image
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniq_tf import plots

POINTS = [
    {"method": "A", "bops": 1e9, "accuracy": 50.0, "label": "2,2"},
    {"method": "A", "bops": 2e9, "accuracy": 60.0, "std": 0.5},
    {"method": "B", "bops": 3e9, "accuracy": 55.0},  # beaten by A at 2e9
    {"method": "B", "bops": 4e9, "accuracy": 70.0},
    {"method": "C", "bops": 4e9, "accuracy": 65.0},  # same BOPs as B's, lower accuracy
    {"method": "C", "bops": 5e8, "accuracy": 40.0},
]


def test_pareto_front_by_hand():
    assert plots.pareto_front(POINTS) == [5, 0, 1, 3]


def dominates(q, p):
    return (q["bops"] <= p["bops"] and q["accuracy"] >= p["accuracy"]
            and (q["bops"] < p["bops"] or q["accuracy"] > p["accuracy"]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 20)), min_size=1, max_size=25))
def test_pareto_front_is_exactly_the_undominated_points(pairs):
    points = [{"method": "m", "bops": float(b), "accuracy": float(a)} for b, a in pairs]
    front = plots.pareto_front(points)
    for i, p in enumerate(points):
        assert (i in front) == (not any(dominates(q, p) for q in points))
    bops = [points[i]["bops"] for i in front]
    accuracy = [points[i]["accuracy"] for i in front]
    assert bops == sorted(bops) and accuracy == sorted(accuracy)  # a staircase going up


def test_figure_shows_series_front_and_log_axis():
    figure = plots.tradeoff_figure(POINTS, title="t")
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["Pareto front", "A", "B", "C"]
    step = next(line for line in axes.get_lines() if line.get_label() == "Pareto front")
    assert list(step.get_xdata()) == [5e8, 1e9, 2e9, 4e9]
    assert list(step.get_ydata()) == [40.0, 50.0, 60.0, 70.0]
    assert "2,2" in [t.get_text() for t in axes.texts]


def test_published_points_overlay():
    published = plots.published_points()
    assert len(published) == 10
    by_key = {(p["method"], p["label"]): p for p in published}
    resnet = "UNIQ paper: ResNet-18"
    assert by_key[(resnet, "4,8")]["accuracy"] == 67.02
    assert by_key[("UNIQ paper: MobileNet v1", "2,4")]["accuracy"] == 51.01
    # Ours at 224x224, every layer quantized, 8-bit input: ResNet-18 4,8 = 98.43e9 BOPs.
    assert by_key[(resnet, "4,8")]["bops"] == pytest.approx(98.434e9, rel=1e-4)
    assert (by_key[(resnet, "FP")]["bops"] > by_key[(resnet, "5,8")]["bops"]
            > by_key[(resnet, "4,8")]["bops"] > by_key[(resnet, "4,4")]["bops"])
    figure = plots.tradeoff_figure(POINTS[:2], published=True)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["Pareto front", "A", resnet, "UNIQ paper: MobileNet v1"]


def test_plot_tradeoff_writes_a_png_and_failures_keep_the_old_file(tmp_path):
    path = tmp_path / "sub" / "tradeoff.png"
    assert plots.plot_tradeoff(POINTS, path) == str(path)
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (750, 1200)  # 8 x 5 inches at 150 dpi
    before = path.read_bytes()
    with pytest.raises(ValueError):
        plots.plot_tradeoff([{"method": "A", "bops": -1, "accuracy": 1.0}], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["tradeoff.png"]


@pytest.mark.parametrize("points, match", [
    ({"method": "A"}, "must be a list of dicts"),
    ([3], r"points\[0\] must be a dict"),
    ([{"method": "A", "bops": 1.0}], r"points\[0\] lacks \['accuracy'\]"),
    ([{"method": "", "bops": 1.0, "accuracy": 1.0}], "non-empty string"),
    ([{"method": "A", "bops": 0.0, "accuracy": 1.0}], r"\['bops'\] must be a finite number > 0"),
    ([{"method": "A", "bops": 1.0, "accuracy": float("nan")}], r"\['accuracy'\]"),
    ([{"method": "A", "bops": 1.0, "accuracy": 1.0, "std": -1}], r"\['std'\].*>= 0"),
    ([], "Nothing to plot"),
])
def test_bad_points(points, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        plots.plot_tradeoff(points, tmp_path / "p.png")
    assert not list(tmp_path.iterdir())


def test_path_must_be_png(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.png"):
        plots.plot_tradeoff(POINTS, tmp_path / "p.pdf")
