"""`sensor-pipeline job reset-progress`: what it says it did is what it did (the broker and store faked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sensor_pipeline.cli import main
from sensor_pipeline.config import Settings
from sensor_pipeline.job import progress


class NoGroup:
    def result(self, _timeout: float) -> None:
        raise RuntimeError("KafkaError{code=GROUP_ID_NOT_FOUND}")


class Deleted:
    def result(self, _timeout: float) -> None:
        return None


@pytest.fixture(autouse=True)
def faked(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The broker and the job's state collection: ``known`` is the raw topic id the job recorded (None:
    none), ``current`` the topic's id now; ``group_exists`` whether the group exists;
    ``deleted_groups`` records what was deleted."""
    world: dict[str, Any] = {"known": None, "current": "topic-1", "deleted_groups": [], "group_exists": False}

    def delete_groups(_admin: Any, groups: list[str], **_: Any) -> dict[str, Any]:
        world["deleted_groups"] += groups
        answer = Deleted() if world["group_exists"] else NoGroup()
        return dict.fromkeys(groups, answer)

    def forget(query: dict[str, Any]) -> int:
        """The state collection's delete_one: only the raw topic's record, while there is one."""
        if query != {"_id": "raw_topic"} or not world["known"]:
            return 0
        world["known"] = None
        return 1

    admin = type("Admin", (), {"delete_consumer_groups": delete_groups})
    state = type("State", (), {
        "delete_one": lambda self, query: type("Result", (), {"deleted_count": forget(query)})(),
        "find_one": lambda self, _query: {"topic_id": world["known"]} if world["known"] else None,
    })  # fmt: skip
    client = type("Client", (), {"close": lambda self: None})
    monkeypatch.setattr(progress, "_admin", lambda _settings: admin())
    monkeypatch.setattr(progress, "_state", lambda _settings: (client(), state()))
    monkeypatch.setattr(progress, "topic_id", lambda _settings: world["current"])
    return world


def checkpoint_at(folder: Path) -> Path:
    """A Structured Streaming checkpoint's layout: its metadata file, offsets and commits."""
    for sub in ("offsets", "commits"):
        (folder / sub).mkdir(parents=True)
    (folder / "metadata").write_text('{"id":"q"}')
    return folder


def test_a_checkpoint_folder_is_deleted(tmp_path: Path) -> None:
    checkpoint = checkpoint_at(tmp_path / "checkpoint")
    assert progress.reset(Settings(), str(checkpoint)) == [f"deleted checkpoint {checkpoint}"]
    assert not checkpoint.exists()


@pytest.mark.parametrize("what", ["missing", "a file", "an empty folder", "another folder"])
def test_a_path_that_holds_no_checkpoint_resets_nothing(tmp_path: Path, faked: dict[str, Any], what: str) -> None:
    """A mistyped path would leave the real checkpoint, whose offsets hide a new topic's first records."""
    path = tmp_path / "path"
    if what == "a file":
        path.write_text("x")
    elif what == "an empty folder":
        path.mkdir()
    elif what == "another folder":
        (path / "data").mkdir(parents=True)
    with pytest.raises(progress.NothingReset, match=f"no checkpoint at {path}"):
        progress.reset(Settings(), str(path))
    assert faked["deleted_groups"] == [] and (what == "missing" or path.exists())


def test_a_checkpoint_already_gone_is_passed_over_when_told(tmp_path: Path, faked: dict[str, Any]) -> None:
    faked["current"] = "topic-2"  # the topic was recreated: keeping the checkpoint is refused (below)
    gone = tmp_path / "gone"
    assert progress.reset(Settings(), str(gone), missing_ok=True)[-1] == f"no checkpoint at {gone} (--missing-ok)"
    assert faked["deleted_groups"] == [Settings().job_group]


def test_a_checkpoint_is_not_kept_for_a_recreated_topic(faked: dict[str, Any]) -> None:
    faked["known"], faked["current"] = "topic-1", "topic-2"
    with pytest.raises(progress.NothingReset, match="deleted and created again"):
        progress.reset(Settings(), None)
    assert faked["deleted_groups"] == []


def test_with_no_group_and_the_checkpoint_kept_nothing_is_claimed(faked: dict[str, Any]) -> None:
    assert progress.reset(Settings(), None) == []
    assert faked["deleted_groups"] == [Settings().job_group]


@pytest.mark.parametrize("given", ["s3://checkpoints/ckpt", "s3://checkpoints/ckpt/"])
def test_an_s3_checkpoint_is_deleted_under_its_own_prefix_only(mocked_aws: None, given: str) -> None:
    from sensor_pipeline.aws import aws_client

    s3 = aws_client(Settings(), "s3")
    s3.create_bucket(Bucket="checkpoints")
    for key in ("ckpt/metadata", "ckpt/offsets/0", "ckpt-old/metadata"):
        s3.put_object(Bucket="checkpoints", Key=key, Body=b"x")
    assert progress.reset(Settings(), given) == [f"deleted checkpoint {given} (2 objects)"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="checkpoints")["Contents"]] == ["ckpt-old/metadata"]
    with pytest.raises(progress.NothingReset, match=f"no checkpoint at {given} \\(nothing there\\)"):
        progress.reset(Settings(), given)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--yes"], "name the job's checkpoint with --checkpoint"),
        (["--checkpoint", "x", "--keep-checkpoint", "--yes"], "pass one"),
        (["--checkpoint", "x"], "pass --yes"),
        (["--missing-ok", "--keep-checkpoint", "--yes"], "--missing-ok goes with --checkpoint"),
    ],
)
def test_the_command_deletes_the_checkpoint_unless_told_to_keep_it(arguments: list[str], message: str) -> None:
    """A checkpoint kept after a recreated topic hides the new topic's first records: keeping it is asked for."""
    result = CliRunner().invoke(main, ["job", "reset-progress", *arguments])
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_command_keeps_the_checkpoint_when_told_and_says_so() -> None:
    result = CliRunner().invoke(main, ["job", "reset-progress", "--keep-checkpoint", "--yes"])
    assert result.exit_code == 0 and "kept the checkpoint" in result.output, result.output


def test_what_it_deleted_is_what_it_says(tmp_path: Path, faked: dict[str, Any]) -> None:
    faked["group_exists"], faked["known"] = True, "topic-1"
    checkpoint = checkpoint_at(tmp_path / "checkpoint")
    assert progress.reset(Settings(), str(checkpoint)) == [
        f"deleted consumer group {Settings().job_group}",
        "forgot the raw topic's id (the next start records RawSensorData's)",
        f"deleted checkpoint {checkpoint}",
    ]
    assert faked["deleted_groups"] == [Settings().job_group] and not checkpoint.exists() and faked["known"] is None
