"""Accuracy intervals of the report and `report --full`."""
import pytest

from edgessm import cli
from edgessm.report.stats import ci_text, wilson


def test_wilson_interval_known_values():
    lo, hi = wilson(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson(1.0, 60)                      # 60/60: not the empty interval [1, 1]
    assert lo == pytest.approx(0.9398, abs=1e-4) and hi == 1.0
    lo, hi = wilson(0.0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    a, b = wilson(0.99, 200), wilson(0.99, 10000)
    assert b[1] - b[0] < a[1] - a[0]              # more samples, narrower
    assert wilson(0.9, 0) is None and wilson(None, 10) is None and ci_text(None, 5) == ""
    assert ci_text(0.5, 100) == "40.4-59.6%"


@pytest.mark.parametrize("argv, limit", [([], 200), (["--limit", "50"], 50), (["--full"], None),
                                         (["--limit", "50", "--full"], None)])
def test_report_full_means_every_test_sample(argv, limit, monkeypatch, tmp_path, capsys):
    import edgessm.report
    seen = {}

    def fake(out, model, task, lim):
        seen["limit"] = lim
        return tmp_path / "index.html"
    monkeypatch.setattr(edgessm.report, "build_report", fake)
    assert cli.main(["report", "--out", str(tmp_path), *argv]) == 0
    assert seen["limit"] == limit
