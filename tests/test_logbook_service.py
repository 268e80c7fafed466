"""The logbook end to end: the shipped sample ingested through its adapter into a real
store, searched in every mode with filters and operators, answered offline and through the
real ``openai`` client, and used by the agent in a run and by the planner's provider."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from support.dist import osprey_env
from support.postgres import StoreEngine, shared_database

from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.logbook.answers import ABSTAIN, CITATION
from osprey_core.logbook.models import Filters, parse_time
from osprey_core.logbook.service import Logbook
from osprey_core.plugin_host import PluginHost, load_plugins
from osprey_core.run_machine import RunState
from osprey_core.testing.fakes import FakeEmbeddingModel, fake_plugin
from osprey_core.testing.openai_server import FakeOpenAIServer

SAMPLE = Path(__file__).parents[1] / "osprey_core" / "logbook" / "data" / "sample_logbook.jsonl"
SOURCES = {"ops": {"adapter": "jsonl", "location": str(SAMPLE)}}


def host_with_fake_model() -> PluginHost:
    host = load_plugins(environ={})
    host.register(fake_plugin(name="fake_vectors", embedding_models=[
        FakeEmbeddingModel.named("fake_embedding", dimension=64)]))
    return host


def write_config(root: Path, store_url: str | None = None, **logbook: Any) -> Path:
    path = root / "osprey.yml"
    path.write_text(json.dumps({"home": "home", **({"store": {"url": store_url}} if store_url
                                                  else {}), "logbook": {
        "sources": SOURCES, "embeddings": {"model": "fake_embedding"}, **logbook}}))
    return path


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sample_home(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ingest of the sample, copied by each test that changes it; once per store
    engine (``store.url`` naming a PostgreSQL database puts the logbook there)."""
    root = tmp_path_factory.mktemp("logbook")
    with ExitStack() as stack:
        url = None if request.param == "sqlite" else stack.enter_context(
            shared_database(request.getfixturevalue("postgres_server")))
        host = host_with_fake_model()
        config = load_config(host, write_config(root, url), environ={})
        from osprey_core.logbook.sources import ingest_sources

        with Logbook.from_config(config, host) as logbook:
            [outcome] = ingest_sources(logbook, config, host)
            assert outcome.error is None and outcome.report.added == 400, outcome
            logbook.refresh()
        yield root


@pytest.fixture
def logbook(sample_home: Path) -> Iterator[Logbook]:
    host = host_with_fake_model()
    config = load_config(host, sample_home / "osprey.yml", environ={})
    with Logbook.from_config(config, host) as opened:
        yield opened


def ids(result: Any) -> list[str]:
    return [hit.entry.id for hit in result.hits]


# -- searching ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_every_mode_finds_and_respects_filters(logbook: Logbook, mode: str) -> None:
    everything = logbook.search("RF cavity trip", mode=mode, k=50)
    assert everything.hits and everything.mode == mode
    author = everything.hits[0].entry.author or ""
    since = parse_time("2025-01-01")
    filtered = logbook.search("RF cavity trip", mode=mode, k=50,
                              filters=Filters(authors=(author,), since=since))
    assert filtered.hits
    assert all(hit.entry.author == author and hit.entry.utc >= since for hit in filtered.hits)
    in_query = logbook.search(f'RF cavity trip author:"{author}" since:2025-01-01', mode=mode,
                              k=50)
    assert ids(in_query) and set(ids(in_query)) <= set(ids(logbook.search(
        "RF cavity trip", mode=mode, k=400, filters=Filters(authors=(author,), since=since))))


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_no_hit_of_any_mode_breaks_an_operator(logbook: Logbook, mode: str) -> None:
    query = '"beam dump" NOT RF'
    result = logbook.search(query, mode=mode, k=100)
    assert result.hits
    for hit in result.hits:
        text = f"{hit.entry.title} {hit.entry.text}".lower()
        assert "beam dump" in " ".join(text.replace("(", " ").split()) and " rf" not in (
            " " + text.replace(":", " ")), hit.entry.id


def test_identifiers_are_found_whole_and_by_parts(logbook: Logbook) -> None:
    entry = next(hit.entry for hit in logbook.search("RF:CAV3:FWD_PWR", mode="keyword").hits)
    assert "RF:CAV3:FWD_PWR" in entry.text
    assert logbook.search("CAV3", mode="keyword", k=400).total >= 1


def test_hits_carry_highlighted_snippets_and_ranks(logbook: Logbook) -> None:
    result = logbook.search("vacuum", mode="hybrid", k=5)
    assert all("«" in hit.snippet for hit in result.hits[:3])
    assert all(hit.ranks for hit in result.hits)


def test_a_malformed_query_still_answers_with_a_notice(logbook: Logbook) -> None:
    result = logbook.search('vacuum (pressure AND', mode="keyword")
    assert result.hits and result.notices


# -- answers ------------------------------------------------------------------------------


def test_offline_answers_cite_the_entry_of_each_sentence(logbook: Logbook) -> None:
    answer = logbook.ask("which firmware was deployed on ioc-sr-rf-01?")
    assert not answer.abstained and answer.citations
    assert set(answer.citations) <= set(answer.used)
    for support in answer.supports:
        entry = logbook.entry(support.id)
        assert support.text in entry.text or support.text == entry.title


def test_offline_answers_abstain_when_the_logbook_does_not_say(logbook: Logbook) -> None:
    for question in ("when was the cryoplant converted to helium-3 cooling?",
                     "who won the football match on Saturday?"):
        answer = logbook.ask(question)
        assert answer.abstained and answer.citations == [] and answer.text == ABSTAIN


def test_a_last_question_is_answered_from_the_newest_entry(logbook: Logbook) -> None:
    answer = logbook.ask("what caused the last beam dump?")
    newest = max((hit.entry for hit in logbook.search('"beam dumped"', mode="keyword",
                                                      k=400).hits),
                 key=lambda entry: entry.utc)
    assert answer.citations == [newest.id]


def llm_logbook(sample_home: Path, server: FakeOpenAIServer) -> Logbook:
    host = host_with_fake_model()
    config = load_config(host, sample_home / "osprey.yml", environ={
        "OSPREY__LLM__BASE_URL": server.base_url, "OSPREY__LLM__MODEL": "fake-model",
        "OSPREY__LLM__BACKOFF_SECONDS": "0.001"})
    return Logbook.from_config(config, host)


def test_an_llm_answer_keeps_only_citations_of_entries_it_was_given(
        sample_home: Path, server: FakeOpenAIServer) -> None:
    with llm_logbook(sample_home, server) as logbook:
        given = [hit.entry.id for hit in logbook.search("vacuum pressure", mode="hybrid",
                                                        k=8).hits]
        server.script(f"Pressure rose in the sector [#{given[0]}]. An ion pump was replaced "
                      "[#ops/999999]. It was fixed by the night shift [#als/1].")
        answer = logbook.ask("vacuum pressure")
    assert answer.method == "llm" and answer.citations == [given[0]]
    assert "999999" not in answer.text and "als/1" not in answer.text
    assert any("removed" in notice for notice in answer.notices)
    request = server.requests[-1]["messages"]
    assert f"[#{given[0]}]" in request[1]["content"]  # the entries went to the model


def test_an_llm_answer_citing_nothing_it_read_is_refused(sample_home: Path,
                                                        server: FakeOpenAIServer) -> None:
    with llm_logbook(sample_home, server) as logbook:
        server.script("The kicker was replaced in 2019 [#ops/1]. Trust me.")
        answer = logbook.ask("kicker replacement")
    assert answer.citations == [] and not answer.abstained
    assert "could not be checked" in answer.text
    assert not CITATION.findall(answer.text)


def test_an_llm_abstention_cites_nothing(sample_home: Path, server: FakeOpenAIServer) -> None:
    with llm_logbook(sample_home, server) as logbook:
        server.script(f"{ABSTAIN} [#ops/100001]")
        answer = logbook.ask("helium-3 conversion of the cryoplant")
    assert answer.abstained and answer.citations == []


# -- the agent ----------------------------------------------------------------------------


def test_the_agent_searches_the_logbook_in_a_run(sample_home: Path) -> None:
    host = host_with_fake_model()
    config = load_config(host, sample_home / "osprey.yml", environ={})
    with Osprey(host=host, config=config) as osprey:
        run = osprey.run("has the RF cavity tripped before?")
    assert run.state is RunState.DONE, run.error
    assert run.plan is not None and run.plan.steps[0].capability == "logbook_search"
    found = run.context[run.plan.steps[0].output]
    assert found["hits"] and all("id" in hit for hit in found["hits"])


def test_the_provider_is_off_by_default_and_offers_entries_when_on(sample_home: Path) -> None:
    from osprey_core.providers import PROVIDER_CONTEXT

    host = host_with_fake_model()
    config = load_config(host, sample_home / "osprey.yml", environ={})
    with Osprey(host=host, config=config) as osprey:
        run = osprey.run("read SR:CURRENT and tell me about vacuum events")
    outcomes = {o["provider"]: o for o in run.context[PROVIDER_CONTEXT]["outcomes"]}
    assert outcomes["logbook"]["status"] == "skipped"

    host = host_with_fake_model()
    config = load_config(host, sample_home / "osprey.yml",
                         environ={"OSPREY__LOGBOOK__PROVIDER": "true"})
    with Osprey(host=host, config=config) as osprey:
        run = osprey.run("read SR:CURRENT and tell me about vacuum events")
    outcomes = {o["provider"]: o for o in run.context[PROVIDER_CONTEXT]["outcomes"]}
    assert outcomes["logbook"]["status"] == "ok"
    items = outcomes["logbook"]["block"]["items"]
    assert 1 <= len(items) <= 3 and all(item["id"].startswith("ops/") for item in items)


# -- the command line -----------------------------------------------------------------------


def osprey_cli(home: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "osprey_core", *args],
                          env=osprey_env(home, OSPREY_STRICT_PLUGINS="1", **settings),
                          cwd=home.parent,
                          capture_output=True, text=True, timeout=120, check=False)


def test_ingest_search_ask_show_status_purge_from_the_command_line(
        tmp_path: Path, run_store_engine: StoreEngine) -> None:
    home = tmp_path / "home"
    settings = {} if run_store_engine.name == "sqlite" else {
        "OSPREY__STORE__URL": run_store_engine.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return osprey_cli(home, *args, **settings)

    first = cli("logbook", "ingest", "--adapter", "jsonl", "--location", str(SAMPLE),
                "--source", "ops", "--no-embed", "--json")
    assert first.returncode == 0, first.stderr
    [report] = json.loads(first.stdout)["sources"]
    assert (report["added"], report["error"]) == (400, None)
    again = json.loads(cli("logbook", "ingest", "--adapter", "jsonl", "--location",
                           str(SAMPLE), "--source", "ops", "--no-embed",
                           "--json").stdout)["sources"][0]
    assert again["added"] == 0  # incremental: nothing new

    found = cli("logbook", "search", "vacuum AND pressure", "--mode", "keyword", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert hits
    shown = json.loads(cli("logbook", "show", hits[0]["id"], "--json").stdout)
    assert shown["id"] == hits[0]["id"]
    status = json.loads(cli("logbook", "status", "--json").stdout)
    assert status["entries"] == 400 and status["sources"][0]["source"] == "ops"
    missing = cli("logbook", "show", "ops/nope")
    assert missing.returncode == 1 and "no logbook entry" in missing.stderr
    bad = cli("logbook", "search", "x", "--since", "last tuesday")
    assert bad.returncode == 2 and "not a time" in bad.stderr
    purged = cli("logbook", "purge", "--source", "ops", "--yes", "--json")
    assert json.loads(purged.stdout) == {"removed": 400}
    assert json.loads(cli("logbook", "search", "vacuum", "--mode", "keyword",
                          "--json").stdout)["hits"] == []
    assert (home / "logbook.db").exists() is (run_store_engine.name == "sqlite")


@pytest.mark.parametrize("query", ["vacuum OR cryo", "(RF OR kicker) AND trip", "-RF beam",
                                   '"beam dump"', "vacuum AND NOT pressure",
                                   "interlock OR (tag:rf AND cavity)"])
@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_a_boolean_query_keeps_every_arm_to_what_it_matches(logbook: Logbook, mode: str,
                                                            query: str) -> None:
    from osprey_core.logbook.query import parse_query

    matched = set(ids(logbook.search(query, mode="keyword", k=400)))
    assert matched
    found = set(ids(logbook.search(query, mode=mode, k=400)))
    assert found <= matched
    assert parse_query(query).boolean and not parse_query("vacuum pressure rise").boolean
