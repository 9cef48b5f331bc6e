"""worker.aliases: atomic moves with history, compare-and-set, the reference rule."""

from __future__ import annotations

import pytest
import redis

from worker.aliases import AliasConflictError, Aliases, split_ref, valid_ref


def test_aliases_set_moves_and_logs_from_and_to(redis_conn: redis.Redis) -> None:
    aliases = Aliases(redis_conn)
    aliases.set("owner-a", "iris", "champion", version=1, model_id="m1", by="key-1")
    aliases.set("owner-a", "iris", "champion", version=2, model_id="m2", by="key-2")
    current = aliases.get("owner-a", "iris", "champion")
    assert current is not None and (current.version, current.model_id, current.updated_by) == (2, "m2", "key-2")
    assert [(m["from"], m["to"], m["by"]) for m in aliases.history("owner-a", "iris")] == [
        (None, 1, "key-1"),
        (1, 2, "key-2"),
    ]
    assert aliases.get("owner-b", "iris", "champion") is None  # another owner's lineage


def test_aliases_set_with_stale_expectation_does_not_move(redis_conn: redis.Redis) -> None:
    aliases = Aliases(redis_conn)
    aliases.set(None, "iris", "champion", version=1, model_id="m1", by=None)
    with pytest.raises(AliasConflictError, match="expected version 3, found 1"):
        aliases.set(None, "iris", "champion", version=2, model_id="m2", by=None, expected=3)
    current = aliases.get(None, "iris", "champion")
    assert current is not None and current.version == 1
    assert len(aliases.history(None, "iris")) == 1


def test_aliases_delete_missing_alias_logs_nothing(redis_conn: redis.Redis) -> None:
    aliases = Aliases(redis_conn)
    assert aliases.delete(None, "iris", "champion", by=None) is False
    assert aliases.history(None, "iris") == []
    aliases.set(None, "iris", "champion", version=4, model_id="m4", by=None)
    assert aliases.delete(None, "iris", "champion", by="k") is True
    assert [(m["from"], m["to"]) for m in aliases.history(None, "iris")] == [(None, 4), (4, None)]
    assert aliases.all(None, "iris") == []


@pytest.mark.parametrize(
    ("ref", "valid"),
    [
        ("iris", True),
        ("iris@champion", True),
        ("a.b-c_d@v1.2", True),
        ("iris@", False),
        ("@x", False),
        ("iris@a@b", False),
        ("-iris", False),
        ("x" * 65, False),
        ("iris@" + "y" * 65, False),
        ("ir is", False),
    ],
)
def test_valid_ref_accepts_names_and_name_at_alias(ref: str, valid: bool) -> None:
    assert valid_ref(ref) is valid


def test_split_ref_splits_at_the_first_at_sign() -> None:
    assert split_ref("iris@champion") == ("iris", "champion")
    assert split_ref("iris") == ("iris", None)
