"""The published results tables, generated from the report.json files (sample.py) and summary.json
files (experiments/prior_seeds.py: mean ± sd over fit seeds) committed beside them.

  python docs/tables.py                   # check: every block in README.md and docs/*.md
                                          # against docs/reports/NAME.json; exit 1 naming
                                          # each number that differs
  python docs/tables.py --write           # rewrite the blocks from the reports
  python docs/tables.py --add W/report/report.json --name fashion_mnist
                                          # copy a new report (or a W/prior_seeds/summary.json)
                                          # in (then --write)

A block sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->` and is the whole table
of docs/reports/NAME.json, led by one line naming the command, commit and machine that made it;
`<!-- results:NAME columns=key,key -->` shows only those columns (README's short table).
Regenerating a table is: rerun the job, --add its report.json, --write, commit the three.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

from vae.evaluation import report_table

DOCS = pathlib.Path(__file__).resolve().parent
REPO = DOCS.parent
REPORTS = DOCS / "reports"
LABELS = {"standard_normal": "N(0, I)"}
BLOCK = re.compile(r"<!-- results:(?P<name>[\w-]+)(?: columns=(?P<columns>[\w,]+))? -->\n(?P<body>.*?)"
                   r"<!-- /results:(?P=name) -->", re.S)


def pages() -> list[pathlib.Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def load_report(name: str) -> dict | None:
    path = REPORTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine(rep: dict) -> str:
    return rep.get("machine") or "the 2-core CPU"


SEED_COLUMNS = [("latent_nll", "latent NLL (test, nats)"), ("nll_iwae", "nll_iwae[{k}] (nats)"),
                ("fd_classifier", "fd_classifier"), ("precision", "precision"), ("recall", "recall"),
                ("gap_closed_fd_classifier", "FD gap closed"), ("gap_closed_recall", "recall gap closed"),
                ("fd_ratio", "FD / q(z)'s"), ("recall_below", "q(z) recall − its"),
                ("precision_below", "q(z) precision − its"), ("best_temperature", "best T (validation)"),
                ("best_fd_classifier", "fd_classifier at best T"),
                ("best_gap_closed_fd_classifier", "FD gap closed at best T"),
                ("best_gap_closed_recall", "recall gap closed at best T"), ("fit_seconds", "fit (s)")]
AGAINST_Q_Z = ("fd_ratio", "recall_below", "precision_below")  # summary row["against_q_z"]["T=1"]


def seed_stat(row: dict, key: str) -> dict | None:
    """A summary row's {'mean', 'sd', ...} for column `key`: its own, against q(z) at T = 1, or at its
    best temperature (`best_*`: row["at_best_temperature"]); None where the run has no such number."""
    if key in row:
        return row[key]
    if key in AGAINST_Q_Z:
        return (row.get("against_q_z") or {}).get("T=1", {}).get(key)
    if key.startswith("best_"):
        best = row.get("at_best_temperature") or {}
        return best.get(key) or best.get(key.removeprefix("best_"))
    return None


def seeds_table(summary: dict, keys: list[str] | None = None) -> str:
    """The block's body for an experiments/prior_seeds.py summary.json: each prior's mean ± sd over
    fit seeds, then the reference rows' sample metrics."""
    commit = ((summary.get("code") or {}).get("commit") or "unknown")[:10]
    columns = [(key, head.format(k=summary["k"])) for key, head in SEED_COLUMNS if not keys or key in keys]
    head = ["prior", *(h for _, h in columns)]
    lines = [f"`{summary['command']}` at commit {commit} on {machine(summary)}: {summary['n_samples']} samples per "
             f"prior and seed, mean ± sd over fit seeds {summary['seeds']}.",
             "", "| " + " | ".join(head) + " |", "| --- |" + " --- |" * (len(head) - 1)]
    rows = [*summary["priors"].items(), *((f"{name} (reference)", row) for name, row in summary["references"].items())]
    for name, row in rows:
        stats = [seed_stat(row, k) for k, _ in columns]
        cells = [f"{st['mean']:.4g} ± {st['sd']:.2g}" if st else "—" for st in stats]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table(rep: dict, keys: list[str] | None = None) -> str:
    """The block's body for one report (or prior_seeds summary): the provenance line, then the table."""
    if "verdicts" in rep:
        return seeds_table(rep, keys)
    code = rep.get("code") or {}
    commit = (code.get("commit") or "unknown")[:10]
    columns = report_table.columns(rep)
    if keys:
        columns = [(k, h) for k, h in columns if k in keys]
    head = ["prior", *(h for _, h in columns)]
    seeds = f", mean ± sd over sample seeds {rep['seeds']}" if len(rep.get("seeds", [0])) > 1 else ""
    lines = [f"`{rep['command']}` at commit {commit} on {machine(rep)}: {rep['n_samples']} samples per prior{seeds}.",
             "", "| " + " | ".join(head) + " |", "| --- |" + " --- |" * (len(head) - 1)]
    for name, r in report_table.rows(rep):
        cells = [f"{r[k]:.4f}" if k == "nll_iwae_bits_per_dim" and k in r else report_table.cell(r, k)
                 for k, _ in columns]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cells(body: str) -> dict[tuple[str, str], str]:
    """{(row, column): text} of the markdown table in a block."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.startswith("|") and not line.startswith("| ---")]
    if not rows:
        return {}
    header, *body_rows = rows
    return {(row[0], col): cell for row in body_rows for col, cell in zip(header[1:], row[1:])}


def problems_in(page: pathlib.Path, text: str) -> list[str]:
    """Every way the blocks of one page differ from their reports (empty: they match)."""
    found = []
    for block in BLOCK.finditer(text):
        name, keys = block["name"], block["columns"].split(",") if block["columns"] else None
        where = f"{page.relative_to(REPO)}, block {name}"
        rep = load_report(name)
        if rep is None:
            found.append(f"{where}: no docs/reports/{name}.json to check it against")
            continue
        if (rep.get("code") or {}).get("dirty") is not False:
            found.append(f"{where}: docs/reports/{name}.json was made from uncommitted code (or outside git)")
        want = table(rep, keys)
        if block["body"] == want:
            continue
        page_cells, report_cells = _cells(block["body"]), _cells(want)
        wrong = [f"row {row!r}, column {col!r}: the page says {page_cells.get((row, col))!r}, the report gives "
                 f"{value!r}" for (row, col), value in report_cells.items() if page_cells.get((row, col)) != value]
        found.append(f"{where}: " + ("; ".join(wrong) if wrong else "the provenance line or the layout differs"))
    return found


def check() -> list[str]:
    found = [p for page in pages() for p in problems_in(page, page.read_text())]
    shown = {m["name"] for page in pages() for m in BLOCK.finditer(page.read_text())}
    found += [f"docs/reports/{path.stem}.json is shown by no block" for path in sorted(REPORTS.glob("*.json"))
              if path.stem not in shown]
    return found


def write() -> None:
    for page in pages():
        text = page.read_text()

        def regenerate(block):
            rep = load_report(block["name"])
            if rep is None:
                return block.group(0)
            keys = block["columns"].split(",") if block["columns"] else None
            head = block.group(0).split("\n", 1)[0]
            return f"{head}\n{table(rep, keys)}<!-- /results:{block['name']} -->"

        new = BLOCK.sub(regenerate, text)
        if new != text:
            page.write_text(new)
            print(f"rewrote the blocks of {page.relative_to(REPO)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite every block from its report")
    parser.add_argument("--add", help="a report.json to copy in as docs/reports/NAME.json")
    parser.add_argument("--name", help="the NAME of the report --add copies in")
    parser.add_argument("--machine", default=None, help="the machine --add's report ran on (default: the 2-core CPU)")
    args = parser.parse_args(argv)
    if args.add:
        if not args.name:
            parser.error("--add needs --name")
        rep = json.loads(pathlib.Path(args.add).read_text())
        if args.machine:
            rep["machine"] = args.machine
        REPORTS.mkdir(exist_ok=True)
        (REPORTS / f"{args.name}.json").write_text(json.dumps(rep, indent=2) + "\n")
        print(f"copied {args.add} to docs/reports/{args.name}.json")
        return 0
    if args.write:
        write()
        return 0
    found = check()
    for problem in found:
        print(f"mismatch: {problem}", file=sys.stderr)
    if not found:
        print("every results block matches its report")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
