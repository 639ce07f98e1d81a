"""The price table: the shipped file, names and aliases, what a request costs, an operator's
file and inline overrides, and every problem of a bad file on a line of its own."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import yaml

from plugins.prices.reading import build_table
from plugins.prices.table import PriceTable
from proxy.context import Usage

SHIPPED = Path(__file__).resolve().parents[2] / "plugins" / "prices" / "mistral-prices.yaml"
SOURCE = "prices.file (SIDECAR_PRICES_FILE)"


def table(text: str | None = None, tmp_path: Path | None = None,
          overrides: object = None) -> tuple[PriceTable | None, list[str]]:
    """The table with the operator's file ``text`` (if any) and ``overrides``."""
    path = ""
    if text is not None and tmp_path is not None:
        file = tmp_path / "prices.yaml"
        file.write_text(text)
        path = str(file)
    return build_table(SOURCE, path, overrides)


def shipped() -> PriceTable:
    found, problems = table()
    assert problems == [] and found is not None
    return found


def test_the_shipped_table_is_dated_in_dollars_and_names_every_alias_target() -> None:
    raw = yaml.safe_load(SHIPPED.read_text())
    prices = shipped()
    assert prices.currency == "USD" and str(prices.as_of) == str(raw["as_of"])
    assert "check and override" in SHIPPED.read_text().lower()
    for alias, target in raw["aliases"].items():
        assert prices.price_of(alias) is prices.price_of(target) is not None, alias
    for name in ("mistral-large-latest", "mistral-medium-latest", "mistral-small-latest",
                 "ministral-8b-latest", "ministral-3b-latest", "codestral-latest",
                 "pixtral-large-latest", "open-mistral-nemo", "mistral-embed",
                 "mistral-moderation-latest", "magistral-medium-latest",
                 "magistral-small-latest", "devstral-small-latest", "devstral-medium-latest",
                 "mistral-ocr-latest", "voxtral-mini-latest"):
        assert prices.price_of(name) is not None, name


def test_a_request_costs_its_tokens_at_the_listed_prices() -> None:
    prices = shipped()
    raw = yaml.safe_load(SHIPPED.read_text())["models"]["mistral-large-2411"]
    usage = Usage(prompt_tokens=1234, completion_tokens=567, total_tokens=1801)
    expected = (1234 * Decimal(str(raw["input"])) + 567 * Decimal(str(raw["output"]))) \
        / 1_000_000
    assert prices.cost("mistral-large-latest", usage) == expected
    assert prices.cost("mistral-large-2411", usage) == expected
    # An embedding: prompt tokens only, exact to the billionth.
    assert prices.cost("mistral-embed", Usage(7, 0, 7)) == Decimal("0.0000007")


def test_unknown_models_have_no_price_and_nothing_is_guessed() -> None:
    prices = shipped()
    usage = Usage(100, 100, 200)
    for name in ("mistral-large", "mistral-large-2999", "Mistral-Large-Latest",
                 "mistral-large-latest ", "ft:mistral-small-latest:acme:1", "gpt-4o", ""):
        assert prices.price_of(name) is None, name
        assert prices.cost(name, usage) is None, name


def test_cached_prompt_tokens_cost_the_cached_input_price_else_the_input_price(
        tmp_path: Path) -> None:
    prices, problems = table(overrides={"no-cache-price": {"input": 1, "output": 2}})
    assert problems == [] and prices is not None
    usage = Usage(prompt_tokens=1000, completion_tokens=10, total_tokens=1010,
                  cached_tokens=800)
    # mistral-small: 200 fresh at 0.10, 800 cached at 0.01, 10 out at 0.30 (per million).
    assert prices.cost("mistral-small-latest", usage) == Decimal("0.000031")
    assert prices.cost("no-cache-price", usage) == Decimal("0.00102")
    # More cached tokens than prompt tokens (nonsense from upstream) caps at the prompt.
    odd = Usage(prompt_tokens=10, completion_tokens=0, total_tokens=10, cached_tokens=50)
    assert prices.cost("mistral-small-latest", odd) == Decimal("0.0000001")


def test_pages_and_audio_minutes_are_priced_where_the_table_has_them() -> None:
    prices = shipped()
    assert prices.cost("mistral-ocr-latest", Usage(pages=3)) == Decimal("0.003")
    assert prices.cost("mistral-ocr-2505-completion", Usage(pages=1000)) == Decimal("1")
    # Transcription is billed by the minute; the tokens it reports are not charged.
    assert prices.cost("voxtral-mini-latest",
                       Usage(4, 635, 639, audio_seconds=90)) == Decimal("0.0015")
    # Voxtral Small: text tokens and audio minutes both.
    assert prices.cost("voxtral-small-latest", Usage(1_000_000, 0, 1_000_000,
                                                     audio_seconds=60)) == Decimal("0.104")


def test_the_usage_upstream_reports_is_read_whole() -> None:
    usage = Usage.from_json({"prompt_tokens": 1013, "completion_tokens": 30,
                             "total_tokens": 1043,
                             "prompt_tokens_details": {"cached_tokens": 1008},
                             "prompt_audio_seconds": 12})
    assert usage is not None
    assert (usage.cached_tokens, usage.audio_seconds) == (1008, 12)
    flat = Usage.from_json({"prompt_tokens": 5, "num_cached_tokens": 3})
    assert flat is not None and flat.cached_tokens == 3
    junk = Usage.from_json({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": "x"},
                            "prompt_audio_seconds": -4})
    assert junk is not None and (junk.prompt_tokens, junk.cached_tokens,
                                 junk.audio_seconds) == (5, 0, 0)
    ocr = Usage.from_ocr({"pages_processed": 4, "doc_size_bytes": 1})
    assert ocr is not None and ocr.pages == 4 and Usage.from_ocr({}) is None


def test_an_operators_file_adds_models_reprices_some_and_moves_aliases(
        tmp_path: Path) -> None:
    prices, problems = table("""
as_of: 2026-01-15
models:
  acme-ft: {input: 1000, output: 3000}
  mistral-large-2411: {input: "1.5", output: 4.5}
aliases:
  acme-latest: acme-ft
  mistral-small-latest: mistral-small-2503
""", tmp_path)
    assert problems == [] and prices is not None
    assert prices.currency == "USD" and str(prices.as_of) == "2026-01-15"
    assert prices.cost("acme-latest", Usage(1, 1, 2)) == Decimal("0.004")
    assert prices.cost("mistral-large-latest", Usage(1_000_000, 0, 1_000_000)) == Decimal("1.5")
    assert prices.price_of("mistral-small-latest") is prices.price_of("mistral-small-2503")
    # The rest of the shipped table stands.
    assert prices.price_of("codestral-latest") is not None


def test_an_operators_file_may_replace_the_table_in_another_currency(tmp_path: Path) -> None:
    prices, problems = table("""
replace: true
currency: EUR
models:
  mistral-small-2506: {input: 0.09, output: 0.28}
aliases:
  mistral-small-latest: mistral-small-2506
""", tmp_path)
    assert problems == [] and prices is not None
    assert prices.currency == "EUR" and prices.as_of is None
    assert set(prices.models) == {"mistral-small-2506"}
    assert prices.price_of("mistral-large-latest") is None


def test_inline_overrides_apply_last(tmp_path: Path) -> None:
    prices, problems = table("models:\n  acme-ft: {input: 1, output: 1}\n", tmp_path,
                             overrides={"acme-ft": {"input": 2, "output": 2},
                                        "mistral-large-latest": {"input": 0, "output": 0}})
    assert problems == [] and prices is not None
    assert prices.cost("acme-ft", Usage(1_000_000, 0, 1_000_000)) == Decimal(2)
    # An override of an alias's name prices that name on its own.
    assert prices.cost("mistral-large-latest", Usage(5, 5, 10)) == Decimal(0)
    assert prices.cost("mistral-large-2411", Usage(1_000_000, 0, 1_000_000)) == Decimal(2)


def test_a_bad_file_gives_one_line_per_problem_with_its_line(tmp_path: Path) -> None:
    prices, problems = table("""\
currency: EUR
colour: blue
models:
  good: {input: 1, output: 2}
  negative: {input: -1, output: 2}
  words: {input: cheap, output: 2}
  half: {input: 1}
  typo: {input: 1, ouput: 2}
  flag: {input: true, output: 1}
  empty: {}
aliases:
  dangling: nowhere
  good: good
""", tmp_path)
    assert prices is None
    where = f"{SOURCE} {tmp_path / 'prices.yaml'}"
    assert problems == [
        f"{where} line 2: colour: unknown key (known: as_of, currency, replace, models, "
        "aliases)",
        f"{where} line 5: models.negative.input: expected a price (a number from 0 to 1000000), "
        "got -1",
        f"{where} line 6: models.words.input: expected a price (a number from 0 to 1000000), "
        "got 'cheap'",
        f"{where} line 7: models.half: input and output are priced together (0 for what a "
        "model does not charge)",
        f"{where} line 8: models.typo.ouput: unknown price (known: input, output, "
        "cached_input, per_1000_pages, per_audio_minute)",
        f"{where} line 9: models.flag.input: expected a price (a number from 0 to 1000000), "
        "got True",
        f"{where} line 10: models.empty: expected prices such as {{input: 0.1, output: 0.3}}, "
        "got {}",
        f"{where} line 13: aliases.good: is also in models: a name is either a model or an "
        "alias",
        f"{where}: currency EUR differs from the shipped table's USD; give every price in "
        "USD, or set replace: true to use your table alone",
        f"{where}: aliases.dangling: names nowhere, which is no model in the table",
    ]


def test_an_unreadable_or_broken_file_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert build_table(SOURCE, str(missing)) == (
        None, [f"{SOURCE} {missing}: cannot read it (No such file or directory)"])
    _prices, problems = table("models:\n  a: {input: 1\n", tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"{SOURCE} {tmp_path}")
    assert "not valid YAML" in problems[0]
    # A price past any model's is a misplaced decimal point.
    _prices, problems = table(overrides={"x": {"input": "NaN", "output": 1},
                                         "y": {"input": 2.5, "output": 6_000_000}})
    assert problems == [
        "prices.overrides: x.input: expected a price (a number from 0 to 1000000), got 'NaN'",
        "prices.overrides: y.output: expected a price (a number from 0 to 1000000), "
        "got 6000000"]
