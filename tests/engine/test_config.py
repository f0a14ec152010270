"""The sectioned engine configuration: TOML tables, environment overrides, refusals that name
where a setting lives, range checks, and ``crossrec config show``."""

from __future__ import annotations

import tomllib

import pytest

from engine.config import EngineConfig, LimitsConfig, ServerConfig, StoreConfig
from engine.config.check import ConfigError
from engine.config.file import REDACTED, show


def test_layers_toml_then_environment_then_overrides(tmp_path, monkeypatch):
    path = tmp_path / "engine.toml"
    path.write_text(
        "[server]\nport = 6000\n[limits]\nmax_k = 30\n"
        '[store]\npath = "/data/events.sqlite"\n[profile]\nhalf_life_days = 7.5\n'
        "[retrieval.blend]\nease = 0.25\n"
    )
    monkeypatch.setenv("CROSSREC_LIMITS__MAX_K", "40")
    monkeypatch.setenv("CROSSREC_RETRIEVAL__BLEND__FACTORS", "0.5")
    config = EngineConfig.load(path, {"server": {"port": 7000, "host": None}})
    assert config.server == ServerConfig(port=7000)  # None: the flag was not given
    assert config.limits == LimitsConfig(max_k=40)
    assert config.store.path == "/data/events.sqlite"
    assert config.profile.half_life_days == 7.5
    assert config.retrieval.blend.as_dict() == {
        "neighbours": 0.2,
        "popular": 1.0,
        "search": 0.02,
        "ease": 0.25,
        "factors": 0.5,
    }


def test_an_unknown_key_is_refused_with_the_keys_its_table_knows(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting server\.prot \(known here: host, port"):
        EngineConfig.load(path)
    path.write_text("[serve]\nport = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting serve \(known here: server, limits"):
        EngineConfig.load(path)


@pytest.mark.parametrize(
    ("line", "now"),
    [
        ("max_k = 3", r"max_k in \[limits\] \(CROSSREC_LIMITS__MAX_K\)"),
        ('artifact = "x"', r"artifact in \[arms\] \(CROSSREC_ARMS__ARTIFACT\)"),
        ("arm_b_share = 0.1", r"b_share in \[arms\] \(CROSSREC_ARMS__B_SHARE\)"),
        ("blend_ease = 1.0", r"ease in \[retrieval.blend\] \(CROSSREC_RETRIEVAL__BLEND__EASE\)"),
        ('shard_group_on_late = "fail"', r"on_late in \[ray\] \(CROSSREC_RAY__ON_LATE\)"),
        ('store = "e.sqlite"', r"path in \[store\] \(CROSSREC_STORE__PATH\)"),
    ],
)
def test_an_old_flat_key_is_refused_naming_where_it_lives_now(tmp_path, line, now):
    path = tmp_path / "old.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=now):
        EngineConfig.load(path)


def test_an_old_flat_environment_variable_is_refused_not_ignored(monkeypatch):
    monkeypatch.setenv("CROSSREC_MAX_K", "40")
    with pytest.raises(
        ConfigError,
        match="CROSSREC_MAX_K is an old flat setting: set CROSSREC_LIMITS__MAX_K instead",
    ):
        EngineConfig.load()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[server]\nport = "6000"', "server.port must be an integer, got '6000'"),
        ("[server]\nport = 1.5", "server.port must be an integer, got 1.5"),
        ("[auth]\nprotect_health = 1", "auth.protect_health must be true or false, got 1"),
        ('[profile]\nhalf_life_days = "x"', "profile.half_life_days must be a number, got 'x'"),
        ("[store]\npath = 3", "store.path must be text, got 3"),
        ("[limits]\nmax_k = 0", "limits.max_k must be at least 1, got 0"),
        ("server = 1", r"server must be the table \[server\]"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_a_value_of_the_wrong_type_or_range_names_its_key(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        EngineConfig.load(path)


def test_environment_values_are_parsed_by_the_field_type(monkeypatch):
    monkeypatch.setenv("CROSSREC_AUTH__PROTECT_HEALTH", "yes")
    monkeypatch.setenv("CROSSREC_SERVER__MAINTENANCE_INTERVAL_S", "60")
    monkeypatch.setenv("CROSSREC_RETRIEVAL__DEFAULT_CROSS_CATEGORY_SHARE", "0.25")
    config = EngineConfig.load()
    assert config.auth.protect_health is True
    assert config.server.maintenance_interval_s == 60.0
    assert config.retrieval.default_cross_category_share == 0.25
    monkeypatch.setenv("CROSSREC_RETRIEVAL__DEFAULT_CROSS_CATEGORY_SHARE", "none")
    assert EngineConfig.load().retrieval.default_cross_category_share is None
    monkeypatch.setenv("CROSSREC_AUTH__PROTECT_HEALTH", "maybe")
    with pytest.raises(ConfigError, match="PROTECT_HEALTH: expected true or false, got 'maybe'"):
        EngineConfig.load()
    monkeypatch.setenv("CROSSREC_AUTH__PROTECT_HEALTH", "0")
    monkeypatch.setenv("CROSSREC_SERVER__PORT", "x")
    with pytest.raises(ConfigError, match="CROSSREC_SERVER__PORT must be an integer, got 'x'"):
        EngineConfig.load()


def test_every_bad_operator_setting_is_refused_by_its_table_and_name():
    with pytest.raises(ConfigError) as err:
        EngineConfig().with_changes(
            server={"maintenance_interval_s": 0},
            feedback={"impression_retention_days": float("nan")},
            store={"event_retention_days": -1},
            arms={"b_share": 1.5},
            limits={"max_k": 0, "default_deadline_s": 20.0},
            ray={"on_late": "never"},
        )
    message = str(err.value)
    for expected in (
        "server.maintenance_interval_s must be greater than 0, got 0",
        "feedback.impression_retention_days must be a finite number, got nan",
        "store.event_retention_days must not be negative, got -1",
        "arms.b_share must be within [0, 1], got 1.5",
        "limits.max_k must be at least 1, got 0",
        "limits.default_deadline_s (20.0) must not exceed limits.max_deadline_s (10.0)",
        "ray.on_late must be one of ('partial', 'fail'), got 'never'",
    ):
        assert expected in message
    # the defaults pass, and so do the boundaries a user may mean
    EngineConfig()
    EngineConfig().with_changes(
        store={"event_retention_days": 0, "max_mb": 0},
        arms={"watch_latest_s": 0, "b_share": 1.0},
        ray={"group_cpus": 0},
    )
    with pytest.raises(ValueError, match=r"unknown configuration sections \['serve'\]"):
        EngineConfig().with_changes(serve={"port": 1})


def test_show_redacts_secrets_and_loads_back_to_the_same_configuration(tmp_path):
    config = EngineConfig().with_changes(
        server={"port": 6001},
        retrieval={"default_cross_category_share": 0.5},
        arms={"salt": 'with "quotes"'},
    )
    text = show(config)
    path = tmp_path / "shown.toml"
    path.write_text(text)
    assert EngineConfig.load(path) == config
    secret = EngineConfig(store=StoreConfig(pseudonym_key="p" * 32)).with_changes(
        auth={"tokens": "query:" + "t" * 20}
    )
    shown = tomllib.loads(show(secret))
    assert shown["store"]["pseudonym_key"] == shown["auth"]["tokens"] == REDACTED
    assert "p" * 32 not in show(secret)
    assert "t" * 20 not in show(secret)
    assert shown["retrieval"]["default_cross_category_share"] == "none"
    assert list(shown) == [
        "server", "limits", "store", "auth", "tls", "arms", "ranker", "feedback", "ray",
        "profile", "retrieval", "exploration", "gpu",
    ]  # fmt: skip


def test_config_show_prints_the_effective_settings_and_a_bad_one_exits_2(
    tmp_path, monkeypatch, capsys
):
    from clients.cli import main

    path = tmp_path / "engine.toml"
    path.write_text('[auth]\ntokens = "admin:' + "a" * 20 + '"\n')
    monkeypatch.setenv("CROSSREC_LIMITS__MAX_K", "12")
    assert main(["config", "show", "--config", str(path), "--port", "6100"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["limits"]["max_k"] == 12
    assert shown["server"]["port"] == 6100
    assert shown["auth"]["tokens"] == REDACTED
    monkeypatch.setenv("CROSSREC_SERVER__MAINTENANCE_INTERVAL_S", "0")
    assert main(["config", "show"]) == 2
    assert capsys.readouterr().err.strip() == (
        "crossrec config: invalid settings: server.maintenance_interval_s must be greater than 0, "
        "got 0.0"
    )


def test_a_bad_setting_from_the_environment_stops_serve_with_one_line(monkeypatch, capsys):
    from engine.cli import run_serve

    monkeypatch.setenv("CROSSREC_SERVER__MAINTENANCE_INTERVAL_S", "0")
    args = type(
        "A",
        (),
        dict.fromkeys(
            (
                "config",
                "artifact",
                "model",
                "host",
                "port",
                "store",
                "metrics_port",
                "processes",
                "json_logs",
            )
        ),
    )()
    assert run_serve(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "crossrec serve: invalid settings: server.maintenance_interval_s must be greater than 0, "
        "got 0.0"
    )


def test_docs_list_every_setting_with_its_default():
    """docs/configuration.md's tables name every field of every section with the default the code
    has (a setting added or a default changed without the docs fails here)."""
    import re
    from pathlib import Path

    from engine.config.check import values
    from engine.config.file import _scalar

    documented, section = {}, ""
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for line in text.splitlines():
        if heading := re.fullmatch(r"## \[(\w+)\]", line):
            section = heading.group(1)
        elif row := re.match(r"\| `([\w.]+)` \| `([^`]*)` \|", line):
            documented[f"{section}.{row.group(1)}"] = row.group(2)
    expected = {
        name: "none" if value is None else _scalar(value) for name, value in values(EngineConfig())
    }
    assert documented == expected


def test_a_certificate_without_its_key_is_refused_with_the_configuration():
    with pytest.raises(ConfigError, match=r"tls\.cert_file and tls\.key_file go together"):
        EngineConfig().with_changes(tls={"cert_file": "server.pem"})
    with pytest.raises(ConfigError, match=r"tls\.cert_file and tls\.key_file go together"):
        EngineConfig().with_changes(tls={"key_file": "server.key"})
    both = EngineConfig().with_changes(tls={"cert_file": "s.pem", "key_file": "s.key"})
    assert both.tls.cert_file == "s.pem"


def test_the_defaults_of_this_rounds_settings_and_limits_are_pinned():
    """What a deployment relies on without saying so: a changed default fails here (and in the
    docs test), not silently in production."""
    from engine.api.processes import MAX_RESTARTS, RESTART_WINDOW_S
    from engine.api.server import FOLLOW_PINS_S
    from engine.config import ArmsConfig
    from engine.state import postgres
    from engine.state.store import WAL_TRUNCATE_WAIT_S

    assert LimitsConfig().max_request_bytes == 1024 * 1024
    assert LimitsConfig().max_message_bytes == 4 * 1024 * 1024
    assert LimitsConfig().max_batch_explained_items == 1_000
    assert ServerConfig().processes == 1
    assert ArmsConfig().pins_file == ""
    assert WAL_TRUNCATE_WAIT_S == 1.0
    assert (postgres.COUNTS_TTL_S, postgres.CONNECT_TIMEOUT_S, postgres.RETRY_AFTER_S) == (
        5.0,
        2.0,
        1.0,
    )
    assert FOLLOW_PINS_S == 1.0
    assert (MAX_RESTARTS, RESTART_WINDOW_S) == (5, 60.0)
    config = EngineConfig().with_changes(store={"path": "/srv/events.sqlite"})
    assert config.impression_log_path() == "/srv/events.impressions.sqlite"
    assert str(config.pins_path()) == "/srv/events.pins.json"
    shared = EngineConfig().with_changes(store={"path": "postgresql://u@h/db"})
    assert shared.impression_log_path() == "postgresql://u@h/db"  # the same database
    assert shared.pins_path() is None


def test_gpu_shards_are_off_by_default_and_refused_where_faiss_sees_no_gpu(tmp_path):
    from engine.config import EngineConfig
    from engine.config.check import ConfigError
    from engine.core import Engine
    from engine.state.store import SQLiteEventStore
    from indexer import gpu

    assert EngineConfig().gpu.shards is False
    if gpu.available():
        pytest.skip("this machine's faiss sees a GPU")
    from engine.config import GpuConfig

    store = tmp_path / "events.sqlite"
    config = EngineConfig(gpu=GpuConfig(shards=True)).with_changes(store={"path": str(store)})
    with pytest.raises(ConfigError, match=r"\[gpu\] shards = true, but faiss sees no GPU"):
        Engine(config, SQLiteEventStore(store))
