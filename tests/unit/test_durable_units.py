"""Durable pieces that are pure functions: task hub naming, options, action flattening, the store's
file checks."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from funcplane_host.durable.engine import flatten_actions
from funcplane_host.durable.extension import DurableConfigError, hub_name, options_from
from funcplane_host.durable.store import Changes, DurableStoreError, InstanceRow, Message, SqliteStore


def test_hub_name_from_host_json_setting_reference_or_site_and_slot() -> None:
    assert hub_name({"extensions": {"durableTask": {"hubName": "Orders"}}}, {}, "production") == "Orders"
    assert hub_name({"extensions": {"durableTask": {"hubName": "%HUB%"}}}, {"HUB": "FromSetting"}, "x") == "FromSetting"
    env = {"AzureFunctionsJobHost__extensions__durableTask__hubName": "Override"}
    assert hub_name({"extensions": {"durableTask": {"hubName": "Orders"}}}, env, "production") == "Override"
    assert hub_name({}, {}, "production") == "TestHubName"
    # Each slot has its own hub unless one is named.
    assert hub_name({}, {"WEBSITE_SITE_NAME": "shop-app"}, "staging") == "shopappstaging"
    with pytest.raises(DurableConfigError, match="hubName 'no-dashes'"):
        hub_name({"extensions": {"durableTask": {"hubName": "no-dashes"}}}, {}, "production")
    with pytest.raises(DurableConfigError, match="app setting 'MISSING'"):
        hub_name({"extensions": {"durableTask": {"hubName": "%MISSING%"}}}, {}, "production")


def test_options_are_checked_by_name() -> None:
    options = options_from({"extensions": {"durableTask": {"maxConcurrentActivityFunctions": 7,
                                                           "funcplane": {"maxPayloadBytes": 1024}}}})
    assert (options.max_activities, options.payload_limit, options.full_history) == (7, 1024, False)
    defaults = options_from({}, cores=4)  # Azure's defaults: 10 per core
    assert (defaults.max_activities, defaults.max_orchestrations) == (40, 40)
    with pytest.raises(DurableConfigError, match="maxConcurrentOrchestratorFunctions"):
        options_from({"extensions": {"durableTask": {"maxConcurrentOrchestratorFunctions": 0}}})
    with pytest.raises(DurableConfigError, match="funcplane.fullHistory"):
        options_from({"extensions": {"durableTask": {"funcplane": {"fullHistory": "yes"}}}})


def test_flatten_actions_walks_compound_actions_depth_first() -> None:
    a, b, c, d = ({"actionType": 0, "functionName": n} for n in "abcd")
    retry = {"actionType": 12, "compoundActions": [{"actionType": 1, "functionName": "r"}]}
    nested = {"actionType": 11, "compoundActions": [b, {"actionType": 12, "compoundActions": [c]}]}
    flat = flatten_actions([[a, nested, retry, d]])
    assert [x["functionName"] for x in flat] == ["a", "b", "c", "r", "d"]


def test_store_round_trip_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"

    async def scenario() -> None:
        store = SqliteStore(path, "HubOne")
        store.open()
        row = InstanceRow("i1", "orch", "e1", "Pending", '"x"', None, None, 1.0, 1.0, None, [], {"seq": 0})
        changes = Changes(instances=[row], messages=[Message("i1", {"kind": "start"})])
        await store.apply(changes, 1.0)
        loaded, messages = await store.episode_input("i1", 2.0, 10)
        assert loaded is not None and loaded.input == '"x"' and [m.body for m in messages] == [{"kind": "start"}]
        # A failing job rolls back alone; the others in the same transaction commit.
        with pytest.raises(sqlite3.IntegrityError):
            await store.run(lambda conn: conn.execute("INSERT INTO meta VALUES ('taskHub', 'dup')"))
        assert await store.purge(["i1"]) == 1
        store.close()

    asyncio.run(scenario())
    with pytest.raises(DurableStoreError, match="holds task hub 'HubOne', not 'HubTwo'"):
        SqliteStore(path, "HubTwo").open()
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(DurableStoreError, match="belongs to another program"):
        SqliteStore(foreign, "HubOne").open()


def test_store_reuses_the_row_it_committed_and_reads_summaries_without_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteStore(tmp_path / "hub.sqlite", "HubOne")
        store.open()
        events = [{"EventType": 12, "EventId": -1, "IsPlayed": True, "Timestamp": "2026-01-01T00:00:00.000000Z"}]
        row = InstanceRow("i1", "orch", "e1", "Running", None, None, None, 1.0, 1.0, None, events, {"seq": 3})
        # The kept encodings are what is written while there is one per event.
        row.encoded = ['{"EventType":12,"EventId":-1,"IsPlayed":true,"Timestamp":"kept"}']
        await store.apply(Changes(instances=[row], messages=[Message("i1", {"kind": "start"})]), 1.0)
        fresh = await store.instance("i1")
        assert fresh is not None and fresh.history[0]["Timestamp"] == "kept" and fresh.state == {"seq": 3}
        summary = await store.instance("i1", history=False)
        assert summary is not None and summary.status == "Running" and summary.history == [] and summary.state == {}
        assert [r.history for r in await store.query(created_from=None, created_to=None, statuses=[],
                                                     prefix=None, after=None, top=None)] == [[]]
        # The row this host committed comes back as is while the store holds that version ...
        same, messages = await store.episode_input("i1", 2.0, 10, known=row)
        assert same is row and len(messages) == 1
        # ... and is read again once the store holds another (written by another host, say).
        other = InstanceRow("i1", "orch", "e1", "Completed", None, '"done"', None, 1.0, 2.0, None, [], {"seq": 3})
        await store.apply(Changes(instances=[other]), 2.0)
        reread, _ = await store.episode_input("i1", 2.0, 10, known=row)
        assert reread is not row and reread is not None and reread.status == "Completed" and reread.history == []
        store.close()

    asyncio.run(scenario())


def test_rows_kept_between_episodes_are_bounded_by_count_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from funcplane_host.durable import engine as engine_module

    monkeypatch.setattr(engine_module, "HOT_INSTANCES", 3)
    monkeypatch.setattr(engine_module, "HOT_CHARACTERS", 100)
    engine = engine_module.DurableEngine(None, None, engine_module.Options())  # type: ignore[arg-type]

    def keep(instance_id: str, characters: int) -> None:
        row = InstanceRow(instance_id, "orch", "e", "Running", None, None, None, 1.0, 1.0, None, [], {})
        row.encoded = ["x" * characters]
        engine._keep_hot(row, [])

    for name in ("a", "b", "c", "d"):
        keep(name, 10)
    assert list(engine._hot) == ["b", "c", "d"]  # the oldest goes at the count limit
    keep("e", 20)
    keep("f", 20)
    keep("g", 20)
    assert list(engine._hot) == ["e", "f", "g"] and engine._hot_characters == 60
    keep("huge", 30)  # over a quarter of the budget: not kept
    assert "huge" not in engine._hot
    row, _ = engine._take_hot("f")
    assert row is not None and row.instance_id == "f" and engine._hot_characters == 40
