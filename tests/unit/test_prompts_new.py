"""`ragops prompts new`: a new version file to edit, copied from another version (the bundled
prompt by default), on a real SQLite state store and a tmp prompts directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragops import registry
from ragops.cli import main
from ragops.errors import PromptError
from ragops.prompts import load_prompt_file

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml"


@pytest.fixture
def prompts_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty prompts directory of the user's own (the bundled prompts are not in it)."""
    d = tmp_path / "my-prompts"
    monkeypatch.setenv("RAGOPS_PROMPTS_DIR", str(d))
    return d


def test_new_prompt_copies_the_bundled_one_and_numbers_versions(settings, prompts_dir: Path) -> None:
    r = registry.new_prompt(settings, "support", author="ana")
    path = prompts_dir / "support" / "v1.yaml"
    assert (r["path"], r["ref"], r["source"], r["new_prompt"]) == (str(path), "support@1", "rag_answer@1", True)
    p = load_prompt_file(path)
    bundled = load_prompt_file(BUNDLED)
    assert (p.name, p.version, p.author) == ("support", 1, "ana")
    assert (p.template, p.system, p.refusal_message, p.top_k) == (bundled.template, bundled.system,
                                                                 bundled.refusal_message, bundled.top_k)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Prompt support, version 1: written by `ragops prompts new` from rag_answer@1.")
    assert "demo RAG application" not in text  # the source's header comment is not copied
    assert "# extractive only" in text  # the field comments are

    assert registry.sync(settings, "test")["registered"] == ["support@1"]  # valid as written
    assert registry.load_prompt(settings, "support").version == 1

    r2 = registry.new_prompt(settings, "support")  # the next free version, from support's newest
    assert (r2["ref"], r2["source"], r2["new_prompt"]) == ("support@2", "support@1", False)
    assert load_prompt_file(Path(r2["path"])).version == 2
    r3 = registry.new_prompt(settings, "support", "support@production")
    assert (r3["ref"], r3["source"]) == ("support@3", "support@1")  # an alias, through the registry


def test_new_prompt_never_overwrites_and_never_reuses_a_registered_number(settings, prompts_dir: Path) -> None:
    first = Path(registry.new_prompt(settings, "support")["path"])
    before = first.read_bytes()
    with pytest.raises(PromptError, match=r"v1.yaml exists; `ragops prompts new` never overwrites.*v2"):
        registry.new_prompt(settings, "support", version=1)
    assert first.read_bytes() == before
    registry.sync(settings, "test")
    first.unlink()  # registered, then its file deleted: v1 stays taken
    with pytest.raises(PromptError, match=r"support@1 is registered \(its file is gone\)"):
        registry.new_prompt(settings, "support", "rag_answer@1", version=1)
    assert registry.new_prompt(settings, "support", "rag_answer@1")["ref"] == "support@2"


@pytest.mark.parametrize(("name", "source", "needle"), [
    ("Support Bot", None, "invalid prompt name 'Support Bot'"),
    ("../escape", None, "invalid prompt name '../escape'"),
    ("support", "nope@1", "unknown prompt 'nope' to copy from"),
    ("support", "rag_answer@7", "no file v7.yaml"),
    ("support", "rag_answer@production", "for a bundled prompt give a version, e.g. rag_answer@1"),
])
def test_new_prompt_refuses_bad_input_with_the_fix(settings, prompts_dir: Path, name: str, source: str | None,
                                                   needle: str) -> None:
    with pytest.raises(PromptError) as exc:
        registry.new_prompt(settings, name, source)
    assert needle in str(exc.value)
    assert not prompts_dir.exists() or not any(prompts_dir.rglob("*.yaml"))


def test_cli_prompts_new_prints_the_path_and_next_steps(settings, prompts_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompts", "new", "support", "--from", "rag_answer@1", "--author", "ana"]) == 0
    out = capsys.readouterr().out
    path = prompts_dir / "support" / "v1.yaml"
    assert out.startswith(f"wrote {path}: support@1, a copy of rag_answer@1 (not registered yet)\nnext steps:\n")
    assert "the ragops documentation I can search" in out  # the refusal to edit is quoted
    assert "ragops prompts sync" in out and "ragops eval run --prompt support@1" in out
    assert main(["prompts", "new", "support"]) == 0
    out = capsys.readouterr().out
    assert "support@2, a copy of support@1" in out and "ragops prompts gate support 2" in out
    assert main(["prompts", "new", "support", "--version", "2"]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert main(["prompts", "new", "Bad Name"]) == 2
    assert "invalid prompt name" in capsys.readouterr().err
    assert main(["prompts", "new", "other", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ref"] == "other@1"



def test_new_prompt_rewrites_multi_line_fields_of_the_source(settings, prompts_dir: Path) -> None:
    folder = prompts_dir / "long"
    folder.mkdir(parents=True)
    text = BUNDLED.read_text(encoding="utf-8").replace("name: rag_answer", "name: long")
    text = text.replace("message: First version.", "message: >-\n  First version,\n  on two lines.")
    (folder / "v1.yaml").write_text(text, encoding="utf-8")
    assert load_prompt_file(folder / "v1.yaml").message.startswith("First version, on two lines.")
    r = registry.new_prompt(settings, "long", author="")
    p = load_prompt_file(Path(r["path"]))
    assert (p.name, p.version, p.message) == ("long", 2, "Copied from long@1; say what this version changes.")
