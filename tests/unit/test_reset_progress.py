"""`sensor-pipeline job reset-progress`: what it says it did is what it did (the broker and store faked)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sensor_pipeline.cli import main
from sensor_pipeline.config import Settings
from sensor_pipeline.job import progress


class NoGroup:
    def result(self, _timeout: float) -> None:
        raise RuntimeError("KafkaError{code=GROUP_ID_NOT_FOUND}")


@pytest.fixture(autouse=True)
def faked(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = type("Admin", (), {"delete_consumer_groups": lambda self, groups, **_: dict.fromkeys(groups, NoGroup())})
    deleted = type("Deleted", (), {"deleted_count": 0})
    state = type("State", (), {"delete_one": lambda self, _query: deleted()})
    client = type("Client", (), {"close": lambda self: None})
    monkeypatch.setattr(progress, "_admin", lambda _settings: admin())
    monkeypatch.setattr(progress, "_state", lambda _settings: (client(), state()))


def test_a_checkpoint_folder_is_deleted(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "offsets").mkdir(parents=True)
    assert progress.reset(Settings(), str(checkpoint)) == [f"deleted checkpoint {checkpoint}"]
    assert not checkpoint.exists()


def test_a_mistyped_checkpoint_path_is_not_reported_as_deleted(tmp_path: Path) -> None:
    # The real checkpoint, kept, would make the job resume at the old topic's offsets on the new one.
    missing = tmp_path / "no-such-checkpoint"
    assert progress.reset(Settings(), str(missing)) == [f"no checkpoint at {missing}: nothing deleted there"]


def test_with_no_group_and_no_checkpoint_named_nothing_is_claimed() -> None:
    assert progress.reset(Settings(), None) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--yes"], "name the job's checkpoint with --checkpoint"),
        (["--checkpoint", "x", "--keep-checkpoint", "--yes"], "pass one"),
        (["--checkpoint", "x"], "pass --yes"),
    ],
)
def test_the_command_deletes_the_checkpoint_unless_told_to_keep_it(arguments: list[str], message: str) -> None:
    """A checkpoint kept after a recreated topic hides the new topic's first records: keeping it is asked for."""
    result = CliRunner().invoke(main, ["job", "reset-progress", *arguments])
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_command_keeps_the_checkpoint_when_told_and_says_so() -> None:
    result = CliRunner().invoke(main, ["job", "reset-progress", "--keep-checkpoint", "--yes"])
    assert result.exit_code == 0 and "kept the checkpoint" in result.output, result.output
