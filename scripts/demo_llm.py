"""Helpers of the LLM part of `make demo` (scripts/demo.sh): the demo's settings, its question
subset, and a readable print of one generated answer with its groundedness verdict and of the
promote_prompt decision. Run with the project venv (`source scripts/env.sh`).

    python scripts/demo_llm.py settings OUT.yaml         ragops.yaml with eval.judge off
    python scripts/demo_llm.py subset OUT.jsonl ID...    those golden questions, in that order
    python scripts/demo_llm.py show NAME                 last gate decision of prompt NAME: one answer + the gate table
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from ragops.config import default_config_path, load_settings

WRAP = 100


def _set_key(text: str, section: str, key: str, value: str) -> str:
    """``section.key: value`` in a settings YAML text (comments and layout kept); added when absent."""
    block = re.search(rf"(?ms)^{section}:[ \t]*(?:#[^\n]*)?\n(.*?)(?=^\S)", text + "\nend_of_file:\n")
    if not block:
        return text.rstrip("\n") + f"\n{section}:\n  {key}: {value}\n"
    body = block.group(1)
    new_body, n = re.subn(rf"(?m)^([ \t]+{re.escape(key)}:[ \t]*)[^#\n]*?([ \t]*(?:#.*)?)$", rf"\g<1>{value}\g<2>",
                          body, count=1)
    if n == 0:
        new_body = f"  {key}: {value}\n" + body
    return text[:block.start(1)] + new_body + text[block.end(1):]


def cmd_settings(args: argparse.Namespace) -> int:
    """The active settings file with two demo changes, everything else as configured:
    eval.judge false (the 135M model is no judge, and three judge calls per answer would multiply the
    demo's time) and alerts.send_attempts 1 (no SMTP server here: the e-mail waits in the outbox
    after one try instead of after 14 s of retries; `ragops alerts flush` sends it later)."""
    import os

    src = Path(os.environ.get("RAGOPS_CONFIG") or default_config_path())
    text = src.read_text(encoding="utf-8")
    text = _set_key(text, "eval", "judge", "false")
    text = _set_key(text, "alerts", "send_attempts", "1")
    Path(args.out).write_text(f"# written by scripts/demo_llm.py from {src} for `make demo`: eval.judge false, "
                              "alerts.send_attempts 1\n" + text, encoding="utf-8")
    s = load_settings(args.out)
    if s.eval.judge or s.alerts.send_attempts != 1:
        sys.exit(f"{args.out}: could not switch eval.judge off / alerts.send_attempts to 1")
    return 0


def cmd_subset(args: argparse.Namespace) -> int:
    s = load_settings()
    src = Path(s.resolve_path(s.eval.default_dataset))
    rows = {json.loads(line)["id"]: line.strip() for line in src.read_text(encoding="utf-8").splitlines() if line.strip()}
    missing = [i for i in args.ids if i not in rows]
    if missing:
        sys.exit(f"question id(s) {', '.join(missing)} not in {src}")
    Path(args.out).write_text("".join(rows[i] + "\n" for i in args.ids), encoding="utf-8")
    return 0


def _wrap(text: str, indent: str = "    ") -> str:
    return "\n".join(textwrap.fill(p, WRAP, initial_indent=indent, subsequent_indent=indent) or indent
                     for p in text.strip().splitlines() if p.strip())


def _num(v: Any, signed: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return str(v)


def show_answer(settings: Any, run_id: str, ref: str) -> None:
    """One answered question of the run: the answer and every claim's verdict as the run recorded it."""
    from ragops import state
    from ragops.grounding.claims import split_claims

    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        out = Path(run.output_dir) if run is not None and run.output_dir else settings.eval_dir / run_id
        if run is not None and run.prompt_version is not None:
            ref = f"{run.prompt_name}@{run.prompt_version} ({ref.partition('@')[2]})"
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    answered = [r for r in rows if r.get("answer") and not r.get("refused") and not r.get("error")]
    if not answered:
        print(f"  (no question of {run_id} was answered by the model; see {path})")
        return
    # the answer with the most unsupported claims (the first one on a tie): it shows what the check reports
    r = max(answered, key=lambda r: len((r.get("detail") or {}).get("unsupported_claims") or []))
    m, d = r.get("metrics", {}), r.get("detail", {})
    print(f"  {ref} on {r['id']}, of the {len(answered)} answered questions of eval run {run_id} the one with the "
          "most unsupported claims:")
    print(f"  question:  {r['question']}")
    print(f"  reference: {r.get('reference_answer') or '-'}")
    print(f"  answer ({r.get('tokens_out', '?')} tokens in {r.get('generation_ms', 0) / 1000:.1f}s, model "
          f"{r.get('model')}):")
    print(_wrap(r["answer"]))
    bad = {c["claim"]: c for c in d.get("unsupported_claims", [])}
    claims = [c.text for c in split_claims(r["answer"])]
    print(f"  groundedness: {d.get('n_claims', len(claims))} claims (repeats listed once), {len(bad)} unsupported; "
          "faithfulness "
          f"{_num(m.get('faithfulness'))}, hallucination {_num(m.get('hallucination_rate'))}, citation validity "
          f"{_num(m.get('citation_validity'))}")
    seen: set[str] = set()
    for text in claims:
        if text in seen:
            continue
        seen.add(text)
        c = bad.get(text)
        if c is None:
            print(f"    supported    {textwrap.shorten(text, 88)}")
        else:
            why = c["reason"] + (f" ({', '.join(map(str, c['detail']))})" if c.get("detail") else "")
            print(f"    UNSUPPORTED  {textwrap.shorten(text, 88)}\n                 reason: {why}"
                  + (f"; closest passage [{c['passage']}]: {textwrap.shorten(c.get('closest') or '', 70)}"
                     if c.get("passage") else ""))
    print(f"  every question: {path}")


def cmd_show(args: argparse.Namespace) -> int:
    from ragops import registry

    s = load_settings()
    events = [e for e in registry.history(s, args.name) if e["action"] in ("promoted", "rejected")
              and (e.get("evidence") or {}).get("checks") is not None]
    if not events:
        sys.exit(f"no gate decision recorded for prompt {args.name}")
    e = events[-1]
    ev = e["evidence"]
    cand, prod = ev.get("candidate_run"), ev.get("production_run")
    prod_ref = f"{args.name}@production"
    if prod:
        print("==> one answer of the local model, from the gate's production run (no extra generation)")
        show_answer(s, prod, prod_ref)
        print()
    verdict = "PROMOTED" if e["action"] == "promoted" else "REJECTED"
    print(f"==> promote_prompt decision for {args.name}@{e['to']}: {verdict} "
          f"(gate '{ev.get('profile')}', {ev.get('questions')} questions, index {ev.get('index')} "
          f"v{ev.get('index_version')}, {e['at'][:19]} by {e['actor']})")
    print(f"  reason: {e['reason']}")
    print(f"  {'check':<15}{'metric':<22}{'rule':<30}{'candidate':>10}{'production':>11}{'diff':>8}  95% CI")
    for c in ev["checks"]:
        ci = f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]" if c.get("ci") else ""
        print(f"  {c['kind']:<15}{c['metric']:<22}{textwrap.shorten(str(c['rule']), 29):<30}"
              f"{_num(c.get('candidate')):>10}{_num(c.get('production')):>11}{_num(c.get('difference'), True):>8}  "
              f"{ci:<17}{'ok' if c['passed'] else 'FAIL'}")
    for note in (ev.get("refused"), ev.get("note")):
        if note:
            print(f"  note: {note}")
    for w in ev.get("worst_questions") or []:
        print(f"  regressed most: {w['id']} (drop {w['drop']:.3f}) {textwrap.shorten(w['question'], 70)}")
    if cand:
        print(f"  eval runs: {cand} (candidate) vs {prod} (production)")
    print(f"  production is now {args.name}@{registry.resolve(s, args.name, registry.PRODUCTION)}; "
          f"history: ragops prompts history {args.name}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    x = sub.add_parser("settings")
    x.add_argument("out")
    x.set_defaults(fn=cmd_settings)
    x = sub.add_parser("subset")
    x.add_argument("out")
    x.add_argument("ids", nargs="+")
    x.set_defaults(fn=cmd_subset)
    x = sub.add_parser("show")
    x.add_argument("name")
    x.set_defaults(fn=cmd_show)
    args = p.parse_args()
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
