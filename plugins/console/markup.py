"""HTML built with the standard library, escaped by default.

Every value put into a template is escaped unless it is :class:`Html` (markup this package
made itself), so a key's owner, a conversation's text or an upstream error message can never
become markup: the same guarantee an autoescaping template engine gives, without one.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from string import Template
from typing import Any
from urllib.parse import urlencode

from proxy import __version__


class Html(str):
    """Text that is already HTML (made here from escaped parts): never escaped again."""

    __slots__ = ()


def esc(value: Any) -> Html:
    """``value`` as HTML text: escaped, unless it already is :class:`Html`; ``None`` is
    empty."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def fill(template: str, **values: Any) -> Html:
    """``template`` (``$name`` placeholders, :class:`string.Template`) with every value
    escaped (see :func:`esc`)."""
    return Html(Template(template).substitute({k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Any], separator: str = "") -> Html:
    """Escaped ``parts`` one after the other."""
    return Html(separator.join(esc(part) for part in parts))


def attrs(**values: Any) -> Html:
    """HTML attributes (``class_`` for ``class``; ``True`` for a bare attribute; ``None`` and
    ``False`` left out), each value escaped."""
    out = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return Html("".join(out))


def table(headers: Iterable[Any], rows: Iterable[Iterable[Any]], *, empty: str,
          class_: str = "grid") -> Html:
    """A table; ``empty`` is said instead when there are no rows."""
    body = [Html("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>")
            for row in rows]
    if not body:
        return fill('<p class="empty">$empty</p>', empty=empty)
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    return Html(f'<div class="scroll"><table{attrs(class_=class_)}><thead><tr>{head}</tr>'
                f"</thead><tbody>{''.join(body)}</tbody></table></div>")


def definition_list(items: Mapping[str, Any]) -> Html:
    """``<dl>`` of the items whose value is not ``None`` or empty."""
    parts = [fill("<dt>$term</dt><dd>$value</dd>", term=term, value=value)
             for term, value in items.items() if value not in (None, "")]
    return Html(f'<dl class="facts">{"".join(parts)}</dl>')


def link(href: str, text: Any, **more: Any) -> Html:
    """``<a href>``."""
    return Html(f"<a{attrs(href=href, **more)}>{esc(text)}</a>")


def hidden(name: str, value: str) -> Html:
    """A hidden form field."""
    return Html(f"<input{attrs(type='hidden', name=name, value=value)}>")


def field(label: str, name: str, value: Any = "", *, kind: str = "text",
          hint: str | None = None, **more: Any) -> Html:
    """A labelled ``<input>``."""
    control = Html(f"<input{attrs(type=kind, name=name, id='f-' + name, value=value, **more)}>")
    note = fill('<small>$hint</small>', hint=hint) if hint else Html("")
    return fill('<label for="f-$name"><span>$label</span>$control$note</label>',
                name=name, label=label, control=control, note=note)


def select(label: str, name: str, options: Iterable[tuple[str, str]],
           selected: str | None = None) -> Html:
    """A labelled ``<select>`` of ``(value, text)`` options."""
    parts = [Html(f"<option{attrs(value=value, selected=value == selected)}>{esc(text)}"
                  "</option>") for value, text in options]
    return fill('<label for="f-$name"><span>$label</span><select name="$name" id="f-$name">'
                "$options</select></label>", name=name, label=label, options=join(parts))


def notice(kind: str, message: Any) -> Html:
    """A message box: ``kind`` is ``info``, ``ok`` or ``error``."""
    role = "alert" if kind == "error" else "status"
    return fill('<p class="notice $kind" role="$role">$message</p>', kind=kind, role=role,
                message=message)


#: Navigation: (path, label, the admin action the page needs).
NAV = (
    ("/admin/keys", "Keys", "admin:keys"),
    ("/admin/usage", "Usage", "admin:usage"),
    ("/admin/conversations", "Conversations", "admin:records"),
    ("/admin/health", "Health", "admin:state"),
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>$title · mistral-sidecar console</title>
<link rel="stylesheet" href="/admin/static/console.css?v=$version">
</head>
<body>
<header class="top">
<a class="brand" href="/admin/">mistral-sidecar <span>console</span></a>
$nav
$who
</header>
<main id="main">
<h1>$title</h1>
$body
</main>
</body>
</html>
"""


def page_html(title: str, body: Html, *, current: str = "", actions: Iterable[str] = (),
              who: Html | None = None) -> Html:
    """A whole console page: header with the navigation the caller's ``actions`` allow,
    ``who`` (the signed-in admin and the sign-out form), then ``body``."""
    granted = set(actions)
    items = [Html(f"<li>{link(path, label, aria_current='page' if path == current else None)}"
                  "</li>") for path, label, action in NAV if action in granted]
    nav = Html(f'<nav aria-label="Console"><ul>{"".join(items)}</ul></nav>') if items \
        else Html("")
    return fill(_PAGE, title=title, body=body, nav=nav, who=who or Html(""),
                version=__version__)


def when(iso: str | None) -> Html:
    """A UTC time of the API (``2025-01-31T12:00:00Z``) as ``2025-01-31 12:00:00``; empty when
    there is none."""
    if not iso:
        return Html("")
    shown = iso.replace("T", " ").removesuffix("Z")
    if "." in shown:
        shown = shown.split(".")[0]
    return Html(f'<time{attrs(datetime=iso)}>{esc(shown)}</time>')


def query_string(**values: str | None) -> str:
    """``?name=value&…`` of the values given (``None`` and empty left out), or ``""``."""
    kept = {name: value for name, value in values.items() if value}
    return "?" + urlencode(kept) if kept else ""
