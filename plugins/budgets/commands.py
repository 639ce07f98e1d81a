"""``mistral-sidecar budgets set|list|clear``: managing budgets in the database.

Budgets are rows of the ``budgets`` table; replicas pick up a change within
``budgets.refresh_seconds``. ``list`` shows each budget's spend in its current period, read
from where the sidecar keeps it (Redis, else the database); ``usage`` shows the same after its
table (:func:`usage_sections`). Mistakes in the arguments are one line on standard error and
exit code 2; an unreachable database is exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from plugins.auth.keystore import KeyStore
from plugins.budgets.backends import redis_timeout, spend_backend
from plugins.budgets.budget import KEY, ORG, OWNER, Budget
from plugins.budgets.db_spend import DatabaseSpend
from plugins.budgets.definitions import delete, load_all, matching, save
from plugins.budgets.enforce import counter
from plugins.budgets.money import format_amount, parse_amount
from plugins.budgets.periods import PERIODS, utc_now
from plugins.budgets.spend import SpendUnavailable
from plugins.store import run_with_database
from plugins.store.db import Database
from proxy.hookspecs import UsageSection
from proxy.settings import Settings

__all__ = ["budget_rows", "register", "usage_sections"]

#: The title of the budgets' section in ``usage``.
USAGE_TITLE = "Budgets this period"

#: The longest a command waits for Redis (a person is waiting, not a request).
_CLI_REDIS_TIMEOUT = 2.0


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and exit with 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _subject_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--key", metavar="KEY_ID", help=f"{verb} the budget of this sidecar key")
    parser.add_argument("--owner", help=f"{verb} the budget of this owner (with --org: in that "
                        "organisation only; without: under that name in every organisation)")
    parser.add_argument("--org", help=f"{verb} the budget of this organisation (with --owner: "
                        "the owner's organisation)")
    parser.add_argument("--model", help="a budget on this model only (default: every model)")
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``budgets`` command and its actions."""
    budgets = subparsers.add_parser(
        "budgets", help="set, list and clear spending caps per key, owner, org and model",
        description="Spending caps per sidecar key, owner or organisation, on every model or "
        "one, per UTC day or month. A hard budget refuses requests once reached (429 "
        "budget_exceeded); a soft one only warns. Amounts are in the price table's currency.")
    actions = budgets.add_subparsers(dest="action", metavar="ACTION",
                                     parser_class=_OneLineParser)
    actions.required = True

    set_ = actions.add_parser(
        "set", help="create or replace a budget",
        description="Create a budget, or replace the limit and mode of the one with the same "
        "subject, model and period (its spend so far is kept).")
    _subject_arguments(set_, "set")
    set_.add_argument("--period", choices=PERIODS, required=True,
                      help="day or month (calendar, UTC)")
    set_.add_argument("--limit", metavar="AMOUNT", required=True,
                      help="the cap in the price table's currency (up to 6 decimals)")
    mode = set_.add_mutually_exclusive_group(required=True)
    mode.add_argument("--hard", action="store_true", help="refuse requests once reached")
    mode.add_argument("--soft", action="store_true", help="only warn (headers, events)")
    set_.set_defaults(handler=cmd_set)

    list_ = actions.add_parser(
        "list", help="print every budget with its spend this period",
        description="Print every budget with what it spent in its current period.")
    list_.add_argument("--json", action="store_true", help="print JSON instead of a table")
    list_.add_argument("--config", metavar="FILE", help="YAML configuration file")
    list_.set_defaults(handler=cmd_list)

    clear = actions.add_parser(
        "clear", help="delete budgets",
        description="Delete the budget with --id, or the budgets of a key, owner or "
        "organisation (narrowed by --model and --period when given).")
    clear.add_argument("--id", dest="budget_id", metavar="ID", help="the budget's id")
    _subject_arguments(clear, "clear")
    clear.add_argument("--period", choices=PERIODS, help="only the daily or monthly budget")
    clear.set_defaults(handler=cmd_clear)


def _fail(message: str, code: int = 2) -> int:
    print(f"mistral-sidecar: {message}", file=sys.stderr)
    return code


def _name(option: str, value: str | None) -> str | None:
    """An option's value, stripped; ``ValueError`` when it is empty or not printable."""
    if value is None:
        return None
    value = value.strip()
    if not value or not value.isprintable():
        raise ValueError(f"{option}: expected a non-empty name, got {value!r}")
    return value


def _subject(args: argparse.Namespace, required: bool) -> tuple[str, str, str] | None:
    """``(scope, subject, owner_org)`` from --key / --owner / --org; ``None`` when none is
    given (and not ``required``). ``ValueError`` for a combination that names no budget."""
    key = _name("--key", args.key)
    owner = _name("--owner", args.owner)
    org = _name("--org", args.org)
    if key is not None:
        if owner is not None or org is not None:
            raise ValueError("--key names one key: give it without --owner and --org")
        return KEY, key, ""
    if owner is not None:
        return OWNER, owner, org or ""
    if org is not None:
        return ORG, org, ""
    if required:
        raise ValueError("name whose budget it is: --key KEY_ID, --owner OWNER [--org ORG] "
                         "or --org ORG")
    return None


def _currency(settings: Settings) -> str:
    """The price table's currency: what costs, and so budgets, are counted in."""
    from plugins.prices.reading import build_table

    declared = settings.declared.get("prices.file")
    table, _problems = build_table(declared.describe_source() if declared else None,
                                   settings.get("prices.file") or "",
                                   settings.get("prices.overrides"))
    return table.currency if table is not None else "USD"


def _describe(budget: Budget) -> str:
    model = budget.model or "every model"
    period = "daily" if budget.period == "day" else "monthly"
    return (f"{budget.id}: {budget.describe()}, {model}, {period}, {budget.describe_limit()}, "
            f"{budget.mode}")


# --- set -------------------------------------------------------------------------------------


def cmd_set(args: argparse.Namespace, settings: Settings) -> int:
    """Create or replace a budget; print it."""
    try:
        scope, subject, owner_org = _subject(args, required=True) or ("", "", "")
        model = _name("--model", args.model) or ""
    except ValueError as exc:
        return _fail(str(exc))
    try:
        limit = parse_amount(args.limit)
    except ValueError as exc:
        return _fail(f"--limit: {exc}")
    currency = _currency(settings)

    async def work(db: Database) -> int:
        budget = await save(db, scope=scope, subject=subject, owner_org=owner_org,
                            model=model, period=args.period, limit=limit, currency=currency,
                            hard=bool(args.hard))
        print(f"set {_describe(budget)}")
        return 0

    return run_with_database(settings, work)


# --- list ------------------------------------------------------------------------------------


async def _spend(settings: Settings, db: Database, budgets: Sequence[Budget]
                 ) -> list[int | None]:
    """What each budget spent in its current period, ``None`` each when the backend cannot
    tell."""
    if not budgets:
        return []
    backend = spend_backend(settings, db, timeout=max(redis_timeout(settings),
                                                      _CLI_REDIS_TIMEOUT))
    now = utc_now()
    try:
        if isinstance(backend, DatabaseSpend) and not await backend.sync():
            raise SpendUnavailable(backend.failing or "error")
        return list(await backend.read([counter(b, now)[0] for b in budgets]))
    except SpendUnavailable as exc:
        print(f"mistral-sidecar: cannot read spend from {backend.name} ({exc.reason}); "
              "showing budgets without it", file=sys.stderr)
        return [None] * len(budgets)
    finally:
        if not isinstance(backend, DatabaseSpend):  # nothing to write back from a read
            await backend.close()


def budget_row(budget: Budget, spent: int | None) -> dict[str, Any]:
    """``budget`` as ``budgets list --json`` and the admin API show it, with what it spent in
    its current period (``None``: unknown)."""
    now = utc_now()
    _counter, current = counter(budget, now)
    return {
        "id": budget.id, "scope": budget.scope, "subject": budget.subject,
        "owner_org": budget.owner_org or None, "model": budget.model or None,
        "period": budget.period, "period_start": current.label,
        "resets_at": current.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "limit": format_amount(budget.limit), "currency": budget.currency,
        "mode": budget.mode,
        "spent": None if spent is None else format_amount(spent),
        "percent": None if spent is None else round(spent * 100 / budget.limit, 1),
    }


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Budgets as an aligned table."""
    header = ("id", "scope", "subject", "org", "model", "period", "limit", "spent", "used",
              "mode")
    lines = [header]
    for row in rows:
        used = "?" if row["percent"] is None else f"{row['percent']:g}%"
        spent = "?" if row["spent"] is None else row["spent"]
        lines.append((row["id"], row["scope"], row["subject"], row["owner_org"] or "-",
                      row["model"] or "all", row["period"],
                      f"{row['limit']} {row['currency']}", spent, used, row["mode"]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True))
                   .rstrip() + "\n" for line in lines)


async def budget_rows(settings: Settings, db: Database, owner: str | None = None
                      ) -> list[dict[str, Any]]:
    """Every budget, oldest first, as :func:`budget_row` shows it with its spend this period;
    with ``owner``, only that owner's (:func:`owned_by`). ``budgets list`` and ``usage``
    both show budgets through this."""
    budgets = await load_all(db)
    if owner is not None:
        budgets = await owned_by(db, budgets, owner)
    spent = await _spend(settings, db, budgets)
    return [budget_row(b, s) for b, s in zip(budgets, spent, strict=True)]


async def owned_by(db: Database, budgets: Sequence[Budget], owner: str) -> list[Budget]:
    """Of ``budgets``, those only ``owner``'s spend counts against: on that owner (in one
    organisation or in every one) and on its keys. An organisation's budget is shared by its
    owners, so it is no one owner's."""
    keys = KeyStore(db)
    mine = []
    for budget in budgets:
        if budget.scope == OWNER:
            if budget.subject == owner:
                mine.append(budget)
        elif budget.scope == KEY:
            record = await keys.get(budget.subject)
            if record is not None and record.owner == owner:
                mine.append(budget)
    return mine


async def usage_sections(settings: Settings, db: Database, owner: str | None
                         ) -> list[UsageSection] | None:
    """The budgets' section of ``usage`` (``usage_report_sections``): what ``budgets list``
    prints, narrowed to ``owner``; ``None`` when no budget is in force."""
    rows = await budget_rows(settings, db, owner)
    if not rows:
        return None
    return [UsageSection(name="budgets", title=USAGE_TITLE, text=format_rows(rows),
                         rows=rows)]


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print every budget and its spend this period."""

    async def work(db: Database) -> int:
        rows = await budget_rows(settings, db)
        if args.json:
            print(json.dumps(rows, indent=2))
        elif rows:
            sys.stdout.write(format_rows(rows))
        else:
            print("no budgets")
        return 0

    return run_with_database(settings, work)


# --- clear -----------------------------------------------------------------------------------


def cmd_clear(args: argparse.Namespace, settings: Settings) -> int:
    """Delete the budgets named."""
    try:
        subject = _subject(args, required=args.budget_id is None)
        model = _name("--model", args.model)
        budget_id = _name("--id", args.budget_id)
    except ValueError as exc:
        return _fail(str(exc))
    if budget_id is not None and (subject is not None or model or args.period):
        return _fail("--id names one budget: give it alone")
    scope, who, owner_org = subject or (None, None, None)

    async def work(db: Database) -> int:
        found = await matching(db, budget_id=budget_id, scope=scope, subject=who,
                               owner_org=owner_org, model=model, period=args.period)
        if not found:
            return _fail("no budget matches", code=1)
        await delete(db, [budget.id for budget in found])
        for budget in found:
            print(f"cleared {_describe(budget)}")
        return 0

    return run_with_database(settings, work)
