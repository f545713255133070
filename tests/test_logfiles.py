"""Reading a run's log files: the one follower `toolwarden logs` and the TUI share."""

from __future__ import annotations

from pathlib import Path

from toolwarden.logfiles import LogFollower, log_files, tail_lines


def write(directory: Path, name: str, data: bytes, mode: str = "wb") -> None:
    with (directory / name).open(mode) as handle:
        handle.write(data)


def test_files_are_ordered_by_attempt_then_launch(tmp_path: Path) -> None:
    for name in ("attempt-2.stdout.log", "attempt-1.2.stdout.log", "attempt-1.stderr.log",
                 "attempt-1.stdout.log", "attempt-10.stdout.log", "notes.txt"):
        write(tmp_path, name, b"")
    names = [(f.attempt, f.launch, f.stream) for f in log_files(tmp_path)]
    assert names == [(1, 1, "stderr"), (1, 1, "stdout"), (1, 2, "stdout"), (2, 1, "stdout"),
                     (10, 1, "stdout")]
    assert [f.stream for f in log_files(tmp_path, ("stderr",))] == ["stderr"]
    assert log_files(tmp_path / "missing") == []


def test_follower_returns_only_what_grew(tmp_path: Path) -> None:
    write(tmp_path, "attempt-1.stdout.log", b"one\ntw")
    follower = LogFollower(tmp_path)
    first = follower.read()
    assert [(g.data, g.new_file) for g in first] == [(b"one\ntw", True)]
    assert follower.read() == []
    write(tmp_path, "attempt-1.stdout.log", b"o\n", "ab")
    write(tmp_path, "attempt-1.stderr.log", b"oops\n")
    assert sorted(g.data for g in follower.read()) == [b"o\n", b"oops\n"]


def test_lines_keep_partial_lines_and_mark_stderr(tmp_path: Path) -> None:
    write(tmp_path, "attempt-1.stdout.log", b"one\ntw")
    follower = LogFollower(tmp_path)
    assert follower.read_lines() == ["── attempt 1 stdout ──", "one"]
    write(tmp_path, "attempt-1.stdout.log", b"o\n", "ab")
    write(tmp_path, "attempt-1.stderr.log", b"oops\n")
    assert follower.read_lines() == ["── attempt 1 stderr ──", "! oops", "two"]


def test_a_large_file_is_read_from_near_its_end(tmp_path: Path) -> None:
    write(tmp_path, "attempt-1.stdout.log", b"x" * 90 + b"\nlast\n")
    lines = LogFollower(tmp_path, max_initial_bytes=10).read_lines()
    assert lines[:2] == ["── attempt 1 stdout ──", "… (86 earlier bytes not shown)"]
    assert lines[-1] == "last"


def test_tail_is_the_latest_launch(tmp_path: Path) -> None:
    assert tail_lines(tmp_path, 5) is None
    write(tmp_path, "attempt-1.stdout.log", b"old\n")
    write(tmp_path, "attempt-1.2.stdout.log", b"a\nb\nc\n")
    write(tmp_path, "attempt-1.2.stderr.log", b"warn\n")
    assert tail_lines(tmp_path, 5) == ["! warn", "a", "b", "c"]
    assert tail_lines(tmp_path, 2) == ["b", "c"]
