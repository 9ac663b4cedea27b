"""The published book as a reader sees it: every page of _build/html in headless Chromium.

Needs the built book (``make book`` or ``make test``, which builds it first), Debian's
``/usr/bin/chromium`` and a local MathJax 3 (``make browser-deps`` installs both). MathJax is
served from the local copy by intercepting the CDN address the pages use, so the test runs
offline and checks the HTML exactly as it is deployed.
"""

import functools
import http.server
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
MATHJAX = ROOT / "_build" / "mathjax"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "_build" / "screenshots"
pytestmark = pytest.mark.browser
# sphinx-thebe 0.3.1 adds its inline config script twice under jupyter-book 1.0.4 (its
# `env-before-read-docs` handler runs twice), so the second `const THEBE_JS_URL` throws. Thebe is
# not enabled in this book; this exact message is the only console error tolerated.
KNOWN_UPSTREAM_ERRORS = {"Identifier 'THEBE_JS_URL' has already been declared"}


def pages():
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.glob("book/*.html"))


@pytest.fixture(scope="module")
def site():
    missing = [str(p) for p in (HTML / "book" / "intro.html", CHROMIUM, MATHJAX / "es5") if not p.exists()]
    if missing:
        pytest.fail(f"browser test needs {missing}: run `make book browser-deps` (make test does)")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield chromium
        chromium.close()


def serve_mathjax(route):
    path = urlparse(route.request.url).path.split("/mathjax@3/", 1)[1]
    route.fulfill(path=str(MATHJAX / path))


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(exc.message))
    page.route("**/npm/mathjax@3/**", serve_mathjax)
    page.goto(url, wait_until="networkidle")
    if page.evaluate("() => !!document.querySelector('script[src*=mathjax]')"):
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("() => MathJax.startup.promise")
    return page, errors


def test_the_book_has_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert pages() == sorted(f"{c}.html" for c in chapters)


@pytest.mark.parametrize("name", pages() or ["book/intro.html"])
def test_page_renders_cleanly(site, browser, name):
    page, errors = open_page(browser, site + name)
    try:
        errors = [e for e in errors if e not in KNOWN_UPSTREAM_ERRORS]
        assert errors == [], f"console errors on {name}: {errors}"
        raw_tex = page.evaluate(
            "() => Array.from(document.querySelectorAll('.math')).filter("
            "e => !e.querySelector('mjx-container')).length"
        )
        assert raw_tex == 0, f"{raw_tex} math blocks left unrendered on {name}"
        broken = page.evaluate(
            "() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src)"
        )
        assert broken == [], f"images that do not load on {name}: {broken}"
        nav = page.evaluate(
            "() => Array.from(document.querySelectorAll('nav.bd-links a.reference.internal'))"
            ".map(a => a.getAttribute('href'))"
        )
        listed = {urljoin(name, href).split("#")[0] for href in nav} | {name}
        assert set(pages()) <= listed, f"table of contents on {name} misses {set(pages()) - listed}"
        if name in ("book/intro.html", "book/boustany.html"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{Path(name).stem}.png"), full_page=False)
    finally:
        page.close()


def test_internal_links_and_anchors_resolve():
    ids = {}
    for html in HTML.rglob("*.html"):
        soup = BeautifulSoup(html.read_text(), "html.parser")
        ids[html.resolve()] = {tag["id"] for tag in soup.find_all(id=True)}
    assert ids, "no HTML pages: run `make book`"
    broken = []
    for name in pages():
        soup = BeautifulSoup((HTML / name).read_text(), "html.parser")
        for a in soup.find_all("a", href=True):
            href = a["href"]
            if re.match(r"^[a-z]+:", href) or href.startswith("//"):
                continue
            target, _, anchor = href.partition("#")
            path = (HTML / name).parent / unquote(target) if target else HTML / name
            path = path.resolve()
            if path.is_dir():
                path = path / "index.html"
            if not path.exists():
                broken.append(f"{name}: {href} (no file)")
            elif anchor and path.suffix == ".html" and anchor not in ids.get(path, set()):
                broken.append(f"{name}: {href} (no anchor)")
    assert broken == []


def test_every_chapter_offers_open_in_colab():
    notebooks = [n for n in pages() if (ROOT / n).with_suffix(".ipynb").exists()]
    assert len(notebooks) == len(list((ROOT / "book").glob("*.ipynb")))
    for name in notebooks:
        soup = BeautifulSoup((HTML / name).read_text(), "html.parser")
        links = [a["href"] for a in soup.find_all("a", href=True) if "colab.research.google.com" in a["href"]]
        assert links, f"{name} has no Colab launch button"
        assert links[0].endswith(f"/blob/main/{name[:-5]}.ipynb"), links[0]
