"""Two engines on one PostgreSQL store answer as one: what is ingested through one changes the
other's next list, a user deleted through one is cold-start on the other, and a user lands in the
same A/B arm on both. A shared store without a shared pseudonym key is refused."""

from __future__ import annotations

import pytest
from helpers_engine import engine_config

from clients.sdk import CrossrecClient, Event
from engine.api.server import BackgroundServer
from engine.state.pseudonym import PseudonymKeyError

KEY = "k" * 40


def replica_config(url, tiny_built, salt=""):
    return engine_config(
        url,
        tiny_built,
        store={"pseudonym_key": KEY},
        arms={"b_artifact": str(tiny_built), "b_share": 0.5, "salt": salt},
    )


def test_two_replicas_on_one_postgres_agree(postgres_url, tiny_built, monkeypatch):
    from engine.state import postgres

    monkeypatch.setattr(postgres, "COUNTS_TTL_S", 0.0)  # GetStatus's counts exact, for the assert
    config = replica_config(postgres_url, tiny_built)
    with (
        BackgroundServer(config) as a,
        BackgroundServer(config) as b,
        CrossrecClient(a.target, timeout=10) as at_a,
        CrossrecClient(b.target, timeout=10) as at_b,
    ):
        cold = at_b.recommend("u1", k=3)
        assert cold.fallback  # nothing known of u1 yet
        bought = [Event("u1", "i00", "purchase"), Event("u1", "i05", "view")]
        assert at_a.ingest(bought).accepted == 2
        warm = at_b.recommend("u1", k=3)  # ingested at A, used at B
        assert not warm.fallback
        assert at_b.status().event_count == 2
        arms = {at_a.recommend(f"user{i}", k=1).arm for i in range(20)}
        assert arms == {"a", "b"}  # both arms serve ...
        for i in range(20):  # ... and each user lands in the same one on both replicas
            assert at_a.recommend(f"user{i}", k=1).arm == at_b.recommend(f"user{i}", k=1).arm
        assert at_a.delete_user("u1") == 2
        after = at_b.recommend("u1", k=3)
        assert after.fallback  # deleted at A: cold start at B
        assert [i.item_id for i in after.items] == [i.item_id for i in cold.items]


def test_a_shared_store_without_a_configured_key_is_refused(postgres_url, tiny_built):
    config = engine_config(postgres_url, tiny_built, store={"pseudonym_key": ""})
    with pytest.raises(PseudonymKeyError, match=r"shared store.*same for every engine"):
        config.store.key()


@pytest.mark.integration
def test_with_the_database_down_queries_answer_and_ingestion_says_unavailable(
    postgres_url, postgres_cluster, tiny_built
):
    from clients.sdk import CrossrecError

    config = engine_config(postgres_url, tiny_built, store={"pseudonym_key": KEY})
    with BackgroundServer(config) as server, CrossrecClient(server.target, timeout=15) as client:
        client.ingest([Event("u1", "i00", "purchase")])
        assert not client.recommend("u1", k=3).fallback
        postgres_cluster.stop()
        try:
            # Within the default 2 s deadline: a down store is not waited for on every call.
            recent = [Event("u1", "i05", "view")]
            down = client.recommend("u1", k=3, recent_events=recent, timeout=2.0)
            assert len(down.items) == 3  # answered from the request's own events
            assert not down.fallback
            assert client.recommend("u1", k=3, timeout=2.0).fallback  # or cold start
            unavailable = server.metrics.registry.get_sample_value(
                "crossrec_store_unavailable_total"
            )
            assert unavailable == 2
            with pytest.raises(CrossrecError) as refused:
                client.ingest([Event("u1", "i01", "view")])
            assert refused.value.code == "UNAVAILABLE"
        finally:
            postgres_cluster.start()
        import time

        deadline = time.monotonic() + 20
        while True:  # back without a restart
            try:
                assert client.ingest([Event("u1", "i01", "view")]).accepted == 1
                break
            except CrossrecError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert not client.recommend("u1", k=3).fallback


def test_replicas_share_one_impression_log_that_the_report_reads(postgres_url, tiny_built, capsys):
    from clients.cli import main

    config = replica_config(postgres_url, tiny_built)
    with (
        BackgroundServer(config) as a,
        BackgroundServer(config) as b,
        CrossrecClient(a.target, timeout=10) as at_a,
        CrossrecClient(b.target, timeout=10) as at_b,
    ):
        shown = at_a.recommend("u1", k=3)
        at_b.recommend("u2", k=3)
        at_b.recommend("u1", k=2)
        # u1 clicks, at B, an item A showed: the event quotes A's list.
        click = Event(
            "u1", shown.items[0].item_id, "click", recommendation_id=shown.recommendation_id
        )
        for server in (a, b):
            assert server.engine.feedback.impressions.flush()
        at_b.ingest([click])
        at_a.ingest([click])  # the same click retried at the other replica

        def clicks(server) -> float:
            return sum(
                sample.value
                for family in server.metrics.registry.collect()
                for sample in family.samples
                if sample.name == "crossrec_attributed_total"
            )

        # B counted the click on A's list (looked up in the shared log); A, retried, did not.
        assert (clicks(a), clicks(b)) == (0, 1)
    assert main(["report", "--impressions", postgres_url, "--store", postgres_url]) == 0
    printed = capsys.readouterr().out
    assert "3 lists, 8 item impressions, 1 attributed clicks" in printed
    with BackgroundServer(config) as a, CrossrecClient(a.target, timeout=10) as at_a:
        at_a.delete_user("u1")  # removes u1's lists, shown by either replica
    assert main(["report", "--impressions", postgres_url, "--store", postgres_url]) == 0
    assert "1 lists, 3 item impressions, 0 attributed clicks" in capsys.readouterr().out


def test_the_report_on_an_unreachable_database_is_one_line_without_the_password(capsys):
    from clients.cli import main

    url = "postgresql://someone:hunter2-secret@127.0.0.1:1/nothing"
    assert main(["report", "--impressions", url, "--store", url]) == 2
    printed = capsys.readouterr()
    assert "hunter2" not in printed.out + printed.err
    assert "postgresql://someone:***@127.0.0.1:1/nothing" in printed.out


def test_a_postgres_impression_log_of_version_one_gains_the_new_columns(
    postgres_url, tiny_version, tmp_path
):
    """Tables written before propensities existed: the engine adds the columns on open, the old
    lists read as deterministic and a new explored list keeps its propensities."""
    import psycopg
    from helpers_tiny import NOW
    from test_feedback_engine import RECENT, make_engine

    from apps.impression_log import read_log
    from engine.retrieval.query import Query

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            """
            CREATE SCHEMA crossrec;
            CREATE TABLE crossrec.lists (recommendation_id TEXT PRIMARY KEY,
              user_key TEXT NOT NULL, ts_us BIGINT NOT NULL, arm TEXT NOT NULL,
              index_version TEXT NOT NULL, model_version TEXT NOT NULL, features TEXT NOT NULL);
            CREATE TABLE crossrec.shown (recommendation_id TEXT NOT NULL,
              position INTEGER NOT NULL, item_id TEXT NOT NULL, category TEXT NOT NULL,
              cross_category INTEGER NOT NULL, sources TEXT NOT NULL,
              score DOUBLE PRECISION NOT NULL, price DOUBLE PRECISION, vector BYTEA,
              PRIMARY KEY (recommendation_id, position));
            INSERT INTO crossrec.lists VALUES ('old', 'k', 1, 'a', 'tiny', 'retrieval-only', 's');
            INSERT INTO crossrec.shown VALUES ('old', 0, 't0', 'c', 0, 'popular', 0.5, 1.0, NULL);
            """
        )
    lists, shown = read_log(postgres_url)  # read as it is, before any engine opened it
    assert shown["propensity"].to_list() == [1.0]
    engine = make_engine(
        tmp_path,
        tiny_version,
        feedback={"impression_log": postgres_url},
        exploration={"swap_share": 1.0},
    )
    try:
        rec = engine.recommend("u1", RECENT, Query(k=3), now_us=NOW)
        assert engine.feedback.impressions.flush()
    finally:
        engine.close()
    lists, shown = read_log(postgres_url)
    kinds = dict(zip(lists["recommendation_id"], lists["exploration"], strict=True))
    assert kinds["old"] == ""
    assert '"kind":"swap"' in kinds[rec.recommendation_id]
    new = shown.filter(shown["recommendation_id"] == rec.recommendation_id).sort("position")
    assert new["propensity"].to_list() == pytest.approx(list(rec.result.propensities))
