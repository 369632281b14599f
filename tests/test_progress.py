"""Progress off a terminal: plain lines with counts, rate and ETA at most every INTERVAL seconds."""
import io

import pytest
from rich.console import Console

from omnisource import progress as P
from omnisource.clean.validate import Rules, validate_rows
from omnisource.data.manifest import new_row
from omnisource.features.cache import extract_features
from omnisource.models import create_backbone
from media_factory import write_image, write_video


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(P, "clock", c)
    return c


def plain_console():
    return Console(file=io.StringIO(), force_terminal=False, width=60)


def lines(console) -> list[str]:
    return console.file.getvalue().splitlines()


def test_lines_every_interval_with_counts_rate_and_eta(clock):
    con = plain_console()
    with P.Progress("features (target)", total=100, unit="videos", console=con) as p:
        for _ in range(100):
            clock.now += 0.5  # 2 videos/s: 50 s in all
            p.advance(note="0 failed")
    out = lines(con)
    # one line per 10 s of work (at 10, 20, 30, 40 s) and the closing line at 50 s
    assert out[0] == "features (target): 20/100 videos (20%), 2.0 videos/s, 0:10 elapsed, ETA 0:40, 0 failed"
    assert [line.split(":")[1].split()[0] for line in out[:4]] == ["20/100", "40/100", "60/100", "80/100"]
    assert out[-1] == "features (target): 100 videos in 0:50 (2.0 videos/s), 0 failed"
    assert len(out) == 5
    assert all(len(line) > 60 for line in out[:4])  # long lines are never wrapped at the console width


def test_short_tasks_are_silent_and_disabled_tasks_never_print(clock):
    con = plain_console()
    with P.Progress("quick", total=3, console=con) as p:
        for _ in range(3):
            clock.now += 1
            p.advance()
    with P.Progress("off", total=3, console=con, enabled=False) as p:
        clock.now += 60
        p.advance(3)
    assert lines(con) == []


def test_an_unfinished_task_says_it_stopped_and_unknown_totals_have_no_eta(clock):
    con = plain_console()
    with pytest.raises(KeyboardInterrupt):
        with P.Progress("download", unit="URLs", console=con) as p:
            clock.now += 12
            p.advance(5)
            raise KeyboardInterrupt
    first, last = lines(con)
    assert first == "download: 5 URLs, 0.4 URLs/s, 0:12 elapsed"
    assert last.endswith("(stopped)")


def test_a_tick_without_new_work_still_prints_after_the_interval(clock):
    con = plain_console()
    with P.Progress("download", total=4, unit="URLs", console=con) as p:
        clock.now += 11
        p.advance(0, note="0 ok, 0 failed")  # slow URLs: nothing finished yet
        assert lines(con) == ["download: 0/4 URLs (0%), 0.0 URLs/s, 0:11 elapsed, 0 ok, 0 failed"]
        p.advance(4)


def test_track_reports_items_and_a_generator_closed_after_its_last_item_has_finished(clock):
    con = plain_console()

    def results():  # the shape of the stages' worker loops, consumed through zip()
        with P.Progress("validate (web)", total=3, unit="files", console=con) as p:
            for i in range(3):
                clock.now += 5
                p.advance()
                yield i

    assert [i for _, i in zip("abc", results())] == [0, 1, 2]
    assert lines(con) == ["validate (web): 2/3 files (67%), 0.2 files/s, 0:10 elapsed, ETA 0:05",
                          "validate (web): 3 files in 0:15 (0.2 files/s)"]


def test_track_counts_the_items_it_yields_through_the_omnisource_console(clock, capsys):
    seen = []
    for x in P.track(range(4), "evaluate target_only", unit="batches"):
        clock.now += 6
        seen.append(x)
    assert seen == [0, 1, 2, 3]
    assert capsys.readouterr().out.splitlines() == [
        "evaluate target_only: 2/4 batches (50%), 0.2 batches/s, 0:12 elapsed, ETA 0:12",
        "evaluate target_only: 4 batches in 0:24 (0.2 batches/s)"]


def test_on_a_terminal_each_task_is_a_labelled_bar_with_counts(clock):
    con = Console(file=io.StringIO(), force_terminal=True, width=150)
    with P.Progress("features (target.validated)", total=10, unit="files", console=con) as a, \
            P.Progress("features (web_images)", total=4, unit="files", console=con) as b:
        a.advance(3)
        b.advance(1)
        bars = P._Bars.progress
        descriptions = [t.description for t in bars.tasks]
        assert descriptions == ["features (target.validated)", "features (web_images)"]
        assert [(t.completed, t.total) for t in bars.tasks] == [(3, 10), (1, 4)]
    assert P._Bars.progress is None  # the live display ends with the last task


def test_stages_print_progress_lines_off_a_terminal(tmp_path, monkeypatch, capsys):
    """validate and features report through the one helper, named by what they work on."""
    monkeypatch.setattr(P, "INTERVAL", 0.0)  # every step prints
    rows = [new_row("target", "video", str(write_video(tmp_path / f"v{i}.mp4", 6)), label=0) for i in range(3)]
    rows.append(new_row("target", "image", str(write_image(tmp_path / "i.jpg", size=(40, 40)))))
    validate_rows(rows, Rules(), label="validate (target)")
    extract_features(rows[:3], create_backbone("resnet18", width=0.125), tmp_path / "cache", size=32, frames=2,
                     label="features (target.validated)")
    out = capsys.readouterr().out
    assert "validate (target): 1/4 files (25%)" in out and "validate (target): 4 files in" in out
    assert "features (target.validated): 2/3 files (67%)" in out and "features (target.validated): 3 files in" in out
