"""The prompt registry on a real SQLite state store and real prompt files in a tmp prompts dir:
registration and immutability, aliases and their history, the cached application call, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import registry, state
from ragops.cli import main
from ragops.errors import PromptError
from ragops.registry import load_prompt

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml").read_text(encoding="utf-8")
V2_MESSAGE = "Second version, shorter answers for the registry tests."


def variant(version: int, message: str, text: str = V1) -> str:
    """A copy of v1.yaml as version ``version`` with another commit message."""
    out, n_version = re.subn(r"(?m)^version: 1$", f"version: {version}", text)
    out, n_message = re.subn(r"(?m)^message: .*$", f"message: {message}", out)
    assert (n_version, n_message) == (1, 1), "include/prompts/rag_answer/v1.yaml no longer has these fields"
    return out


@pytest.fixture
def prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<tmp>/prompts/rag_answer/`` holding a byte copy of the bundled v1.yaml."""
    folder = tmp_path / "prompts" / "rag_answer"
    folder.mkdir(parents=True)
    (folder / "v1.yaml").write_bytes((ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml").read_bytes())
    monkeypatch.setenv("RAGOPS_PROMPTS_DIR", str(tmp_path / "prompts"))
    return folder


def add_v2(folder: Path) -> Path:
    p = folder / "v2.yaml"
    p.write_text(variant(2, V2_MESSAGE), encoding="utf-8")
    return p


def moves(settings) -> list[tuple[str, str, int | None, int | None]]:
    return [(e["alias"], e["action"], e["from"], e["to"]) for e in registry.history(settings, "rag_answer")]


# ----------------------------------------------------------------------------------------------
# sync and immutability


def test_first_sync_registers_v1_and_points_production_at_it(settings, prompts: Path) -> None:
    assert settings.prompts_dir == prompts.parent
    assert registry.sync(settings, actor="test") == {"registered": ["rag_answer@1"]}
    assert registry.resolve(settings, "rag_answer", "production") == 1
    hist = registry.history(settings, "rag_answer")
    assert [(e["action"], e["from"], e["to"], e["actor"]) for e in hist] == [("initial", None, 1, "test")]
    with state.session_scope(settings.state_db_url) as s:
        row = s.execute(select(state.PromptVersion)).scalar_one()
        assert (row.name, row.version, row.registered_by) == ("rag_answer", 1, "test")
        assert row.message.startswith("First version")
    assert registry.sync(settings, actor="test") == {"registered": []}
    assert len(registry.history(settings, "rag_answer")) == 1, "a second sync moves nothing"


def test_new_version_is_registered_but_production_stays(settings, prompts: Path) -> None:
    registry.sync(settings)
    add_v2(prompts)
    assert registry.sync(settings)["registered"] == ["rag_answer@2"]
    assert registry.resolve(settings, "rag_answer", "production") == 1
    assert registry.resolve(settings, "rag_answer", "latest") == 2
    assert registry.resolve(settings, "rag_answer", "v2") == 2
    assert registry.pending(settings, "rag_answer") == [2]
    assert moves(settings) == [("production", "initial", None, 1)]
    p = load_prompt(settings, "rag_answer@latest")
    assert (p.version, p.message) == (2, V2_MESSAGE)
    assert load_prompt(settings, "rag_answer").version == 1


def test_first_sync_of_several_versions_points_production_at_the_newest(settings, prompts: Path) -> None:
    add_v2(prompts)
    assert registry.sync(settings)["registered"] == ["rag_answer@1", "rag_answer@2"]
    assert registry.resolve(settings, "rag_answer", "production") == 2
    assert registry.pending(settings, "rag_answer") == []


def test_edited_registered_file_is_refused_everywhere_until_restored(settings, prompts: Path) -> None:
    registry.sync(settings)
    original = (prompts / "v1.yaml").read_bytes()
    edited = original.replace(b"top_k: 5", b"top_k: 3")
    assert edited != original
    (prompts / "v1.yaml").write_bytes(edited)

    with pytest.raises(PromptError) as exc:
        registry.sync(settings)
    msg = str(exc.value)
    assert str(prompts / "v1.yaml") in msg
    assert "was edited after rag_answer@1 was registered" in msg
    assert "immutable" in msg and "new version file" in msg
    with pytest.raises(PromptError, match="was edited after rag_answer@1 was registered"):
        load_prompt(settings, "rag_answer@1")
    with pytest.raises(PromptError, match="was edited after rag_answer@1 was registered"):
        registry.get_prompt("rag_answer", settings=settings, ttl_seconds=0)
    assert [v["status"] for v in registry.list_prompts(settings)[0]["versions"]] == ["EDITED (refused)"]
    with state.session_scope(settings.state_db_url) as s:  # the refusal changed nothing
        assert len(s.execute(select(state.PromptVersion)).all()) == 1

    (prompts / "v1.yaml").write_bytes(original)
    assert load_prompt(settings, "rag_answer@1").top_k == 5
    assert registry.get_prompt("rag_answer", settings=settings, ttl_seconds=0).version == 1
    assert registry.sync(settings) == {"registered": []}
    assert registry.list_prompts(settings)[0]["versions"][0]["status"] == "registered"


def test_invalid_new_file_is_refused_while_a_valid_one_is_registered(settings, prompts: Path) -> None:
    registry.sync(settings)
    bad = variant(2, "uses a variable it does not declare").replace("Question: {question}",
                                                                    "Question: {question} for {audience}")
    assert "{audience}" in bad
    (prompts / "v2.yaml").write_text(bad, encoding="utf-8")
    (prompts / "v3.yaml").write_text(variant(3, "a valid third version"), encoding="utf-8")

    with pytest.raises(PromptError) as exc:
        registry.sync(settings)
    msg = str(exc.value)
    assert str(prompts / "v2.yaml") in msg
    assert "undeclared variable(s) audience" in msg and "(not registered)" in msg
    assert "v3.yaml" not in msg
    with state.session_scope(settings.state_db_url) as s:
        assert sorted(v for (v,) in s.execute(select(state.PromptVersion.version))) == [1, 3]
    assert registry.pending(settings, "rag_answer") == [3]
    statuses = {v["version"]: v["status"] for v in registry.list_prompts(settings)[0]["versions"]}
    assert statuses == {1: "registered", 2: "unregistered", 3: "registered"}
    with pytest.raises(PromptError, match="rag_answer@2 is not registered"):
        load_prompt(settings, "rag_answer@2")


def test_deleted_registered_file_is_reported(settings, prompts: Path) -> None:
    add_v2(prompts)
    registry.sync(settings)
    (prompts / "v1.yaml").unlink()
    with pytest.raises(PromptError) as exc:
        registry.sync(settings)
    assert "rag_answer@1 is registered but its file" in str(exc.value)
    assert str(prompts / "v1.yaml") in str(exc.value) and "is gone" in str(exc.value)
    statuses = {v["version"]: v["status"] for v in registry.list_prompts(settings)[0]["versions"]}
    assert statuses == {1: "file missing", 2: "registered"}
    with pytest.raises(PromptError, match="is gone"):
        load_prompt(settings, "rag_answer@1")


# ----------------------------------------------------------------------------------------------
# moves and history


def test_promote_and_rollback_record_history(settings, prompts: Path) -> None:
    registry.sync(settings)
    with pytest.raises(PromptError, match="has no earlier version to roll back to"):
        registry.rollback(settings, "rag_answer", actor="test")
    add_v2(prompts)
    registry.sync(settings)

    r = registry.promote(settings, "rag_answer", 2, actor="test", reason="better", evidence={"run": "eval-7"})
    assert r == {"name": "rag_answer", "alias": "production", "from": 1, "to": 2}
    assert registry.resolve(settings, "rag_answer", "production") == 2
    assert registry.pending(settings, "rag_answer") == []
    last = registry.history(settings, "rag_answer")[-1]
    assert (last["action"], last["from"], last["to"], last["actor"], last["reason"]) == \
        ("promoted", 1, 2, "test", "better")
    assert last["evidence"] == {"run": "eval-7"}

    with pytest.raises(PromptError, match="already points at version 2"):
        registry.promote(settings, "rag_answer", 2, actor="test")
    with pytest.raises(PromptError, match=r"rag_answer@9 is not registered \(registered: 1, 2\)"):
        registry.promote(settings, "rag_answer", 9, actor="test")

    back = registry.rollback(settings, "rag_answer", actor="oncall", reason="answers got worse")
    assert (back["from"], back["to"]) == (2, 1)
    assert registry.resolve(settings, "rag_answer", "production") == 1
    last = registry.history(settings, "rag_answer")[-1]
    assert (last["action"], last["from"], last["to"], last["actor"], last["reason"]) == \
        ("rolled_back", 2, 1, "oncall", "answers got worse")

    # "the version before its last move": the last move was 2 -> 1, so a second rollback returns to 2
    again = registry.rollback(settings, "rag_answer", actor="oncall")
    assert (again["from"], again["to"]) == (1, 2)
    assert moves(settings) == [("production", "initial", None, 1), ("production", "promoted", 1, 2),
                               ("production", "rolled_back", 2, 1), ("production", "rolled_back", 1, 2)]
    assert registry.history(settings, "rag_answer")[-1]["reason"] == "manual rollback"
    with pytest.raises(PromptError, match="already points at version 2"):
        registry.rollback(settings, "rag_answer", to=2)
    assert registry.rollback(settings, "rag_answer", to=1)["to"] == 1


def test_promote_refuses_an_edited_version(settings, prompts: Path) -> None:
    v2 = add_v2(prompts)
    registry.sync(settings)
    registry.promote(settings, "rag_answer", 1, actor="test")  # production was v2 (newest at first sync)
    v2.write_text(v2.read_text() + "# a comment is an edit too\n")
    with pytest.raises(PromptError, match="was edited after rag_answer@2 was registered"):
        registry.promote(settings, "rag_answer", 2, actor="test")
    assert registry.resolve(settings, "rag_answer", "production") == 1


def test_other_alias_moves_are_set_events_and_not_rollback_targets(settings, prompts: Path) -> None:
    registry.sync(settings)
    add_v2(prompts)
    registry.sync(settings)
    r = registry.promote(settings, "rag_answer", 2, actor="test", alias="candidate")
    assert (r["alias"], r["from"], r["to"]) == ("candidate", None, 2)
    assert registry.resolve(settings, "rag_answer", "candidate") == 2
    assert registry.resolve(settings, "rag_answer", "production") == 1
    assert moves(settings)[-1] == ("candidate", "set", None, 2)
    assert registry.pending(settings, "rag_answer") == [2], "setting another alias decides nothing"
    with pytest.raises(PromptError, match="invalid alias"):
        registry.promote(settings, "rag_answer", 2, alias="Bad Alias")


def test_record_rejection_adds_event_and_clears_pending(settings, prompts: Path) -> None:
    registry.sync(settings)
    add_v2(prompts)
    registry.sync(settings)
    assert registry.pending(settings, "rag_answer") == [2]
    registry.record_rejection(settings, "rag_answer", 2, actor="gate", reason="answer_f1 dropped",
                              evidence={"failed": ["answer_f1"]})
    last = registry.history(settings, "rag_answer")[-1]
    assert (last["action"], last["from"], last["to"], last["actor"], last["reason"]) == \
        ("rejected", 1, 2, "gate", "answer_f1 dropped")
    assert last["evidence"] == {"failed": ["answer_f1"]}
    assert registry.pending(settings, "rag_answer") == []
    assert registry.resolve(settings, "rag_answer", "production") == 1
    statuses = {v["version"]: v["status"] for v in registry.list_prompts(settings)[0]["versions"]}
    assert statuses[2] == "registered, rejected"


# ----------------------------------------------------------------------------------------------
# the cached application call


def test_get_prompt_caches_within_ttl(settings, prompts: Path) -> None:
    add_v2(prompts)
    registry.sync(settings)
    registry.promote(settings, "rag_answer", 1, actor="test")  # production: v1, v2 registered

    first = registry.get_prompt("rag_answer", settings=settings, ttl_seconds=60)
    assert first.version == 1
    assert registry.get_prompt("rag_answer", settings=settings, ttl_seconds=60) is first

    # another process moves production: this one sees it only once its cache entry expires
    with state.session_scope(settings.state_db_url) as s:
        s.get(state.PromptAlias, ("rag_answer", "production")).version = 2
    assert registry.get_prompt("rag_answer", settings=settings, ttl_seconds=60) is first
    fresh = registry.get_prompt("rag_answer", settings=settings, ttl_seconds=0)
    assert fresh.version == 2 and fresh.message == V2_MESSAGE
    assert registry.get_prompt("rag_answer", settings=settings, ttl_seconds=60) is fresh

    # a move in this process clears the cache at once
    registry.promote(settings, "rag_answer", 1, actor="test")
    assert registry.get_prompt("rag_answer", settings=settings, ttl_seconds=60).version == 1


# ----------------------------------------------------------------------------------------------
# reading


def test_diff_shows_the_changed_lines(settings, prompts: Path) -> None:
    registry.sync(settings)
    add_v2(prompts)
    registry.sync(settings)
    d = registry.diff(settings, "rag_answer", "production", "latest")
    assert d.startswith("--- rag_answer@1\n+++ rag_answer@2\n")
    assert "-version: 1\n" in d and "+version: 2\n" in d
    assert f"+message: {V2_MESSAGE}\n" in d and "\n-message: First version" in d
    assert "template: |-" not in d and "top_k: 5" not in d, "unchanged lines beyond the context are not shown"
    assert registry.diff(settings, "rag_answer", "1", "v1") == ""


def test_unknown_prompt_and_alias_name_the_known_ones(settings, prompts: Path) -> None:
    registry.sync(settings)
    with pytest.raises(PromptError) as exc:
        load_prompt(settings, "no_such_prompt")
    assert "unknown prompt 'no_such_prompt'" in str(exc.value) and "known prompts: rag_answer" in str(exc.value)
    with pytest.raises(PromptError) as exc:
        load_prompt(settings, "rag_answer@staging")
    assert "has no alias 'staging' (aliases: production)" in str(exc.value)
    with pytest.raises(PromptError, match="has no alias 'staging'"):
        registry.resolve(settings, "rag_answer", "staging")
    with pytest.raises(PromptError, match="invalid prompt name"):
        load_prompt(settings, "Bad Name")


def test_load_registers_an_unregistered_prompt_on_first_use(settings, prompts: Path) -> None:
    p = load_prompt(settings, "rag_answer")
    assert (p.ref, p.top_k) == ("rag_answer@1", 5)
    assert moves(settings) == [("production", "initial", None, 1)]
    assert registry.history(settings, "rag_answer")[0]["actor"] == "auto"


# ----------------------------------------------------------------------------------------------
# the CLI (in process, same settings through the environment)


def test_cli_prompts_list_history_promote_rollback(settings, prompts: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompts", "sync"]) == 0
    assert capsys.readouterr().out.strip() == "registered 1 new version(s): rag_answer@1"
    add_v2(prompts)
    assert main(["prompts", "sync"]) == 0
    assert "rag_answer@2" in capsys.readouterr().out

    assert main(["prompts", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "rag_answer: production -> v1"
    assert out[1].startswith("  v1 [production]  registered  ") and "ragops: First version" in out[1]
    assert out[2].startswith("  v2  registered  ") and V2_MESSAGE in out[2]

    assert main(["prompts", "promote", "rag_answer", "2", "--reason", "better answers"]) == 0
    assert capsys.readouterr().out.strip() == "rag_answer@production: v1 -> v2"
    assert main(["prompts", "promote", "rag_answer", "2"]) == 2
    assert "error: rag_answer@production already points at version 2" in capsys.readouterr().err

    assert main(["prompts", "rollback", "rag_answer", "--reason", "oops"]) == 0
    assert capsys.readouterr().out.strip() == "rag_answer@production rolled back: v2 -> v1"

    assert main(["prompts", "history", "rag_answer"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "initial" in lines[0] and "v1" in lines[0]
    assert "promoted" in lines[1] and "v1 -> v2" in lines[1] and "by cli: better answers" in lines[1]
    assert "rolled_back" in lines[2] and "v2 -> v1" in lines[2] and "by cli: oops" in lines[2]

    assert main(["prompts", "history", "rag_answer", "--json"]) == 0
    hist = json.loads(capsys.readouterr().out)
    assert [(e["action"], e["from"], e["to"]) for e in hist] == [("initial", None, 1), ("promoted", 1, 2),
                                                                   ("rolled_back", 2, 1)]
    assert main(["prompts", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["aliases"] == {"production": 1}

    (prompts / "v2.yaml").write_text(variant(2, "edited after registration"), encoding="utf-8")
    assert main(["prompts", "sync"]) == 2
    assert "was edited after rag_answer@2 was registered" in capsys.readouterr().err
    assert main(["prompts", "list"]) == 0
    assert "v2  EDITED (refused)" in capsys.readouterr().out


@pytest.mark.parametrize("alias", ["v2", "2", "latest", "Bad Alias"])
def test_aliases_that_look_like_versions_are_refused(alias: str, prompts, settings) -> None:
    registry.sync(settings, "test")
    with pytest.raises(PromptError, match="invalid alias"):
        registry.promote(settings, "rag_answer", 1, alias=alias)
