"""URLs and the links of a page: the canonical form the crawler's seen-set
uses, and ``<a href>`` / ``<img src|srcset>`` extraction."""
from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

from pipeline.net import netguard


def normalize_url(url: str) -> str:
    """Canonical form for the seen-set: fragment and credentials dropped,
    scheme and host lower-cased, default port removed, empty path as ``/``.

    The host and port are the ones the HTTP client will connect to
    (:func:`pipeline.net.netguard.parse_target`). Non-http(s) URLs come back
    without their fragment only. Raises ValueError for an http(s) URL without
    a host, with a bad port, a backslash, or one the URL parsers disagree on.
    """
    url = urldefrag(url.strip()).url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in netguard.SCHEMES:
        return url
    if "\\" in url:
        # urlsplit and urllib3 split "http://a\@b/" at different places: refuse
        # before dropping credentials could hide which host was meant.
        raise ValueError(f"{url!r} holds a backslash")
    netloc = parts.netloc.rpartition("@")[2]  # credentials are never sent
    try:
        target = netguard.parse_target(urlunsplit((scheme, netloc, parts.path, parts.query, "")))
    except netguard.NetGuardError as exc:
        raise ValueError(str(exc)) from None
    return urlunsplit((scheme, target.netloc, parts.path or "/", parts.query, ""))


class _LinkParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = {k: v for k, v in attrs if v}
        if tag == "base" and "href" in attrs and self.base is None:
            self.base = attrs["href"]
        elif tag == "a" and "href" in attrs:
            self.links.append(("page", attrs["href"]))
        elif tag == "img":
            if "src" in attrs:
                self.links.append(("image", attrs["src"]))
            for candidate in attrs.get("srcset", "").split(","):
                if candidate.split():
                    self.links.append(("image", candidate.split()[0]))


def extract_links(html: str, page_url: str) -> list[tuple[str, str]]:
    """``(kind, absolute_url)`` in document order: ``a/href`` as "page",
    ``img/src`` and ``img/srcset`` as "image", resolved against ``<base>``."""
    parser = _LinkParser()
    parser.feed(html)
    parser.close()
    base = _join(page_url, parser.base) if parser.base else page_url
    return [(kind, _join(base, link)) for kind, link in parser.links]


def _join(base: str, link: str) -> str:
    """urljoin, or the bare link when it cannot be parsed (normalize_url then refuses it)."""
    try:
        return urljoin(base, link.strip())
    except ValueError:
        return link.strip()


def clip(text: str, limit: int = 300) -> str:
    """data: URLs can be megabytes; records keep a recognisable prefix."""
    return text if len(text) <= limit else text[:limit] + "..."
