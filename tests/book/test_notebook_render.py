"""Every chapter renders its math on its own, as in Colab or Jupyter: no book configuration.

Each notebook is converted to HTML by nbconvert (so none of ``_config.yml``'s MathJax macros
apply), loaded in headless Chromium with the local MathJax 3, and typeset with undefined macros
reported as errors (MathJax's ``noundefined`` package, which would print them in red instead, is
removed). A chapter passes when no math fails: no ``mjx-merror`` node and no raw ``\\agrad``.
Needs Debian's ``/usr/bin/chromium`` and ``_build/mathjax`` (``make browser-deps``).
"""

import re
from pathlib import Path

import nbformat
import pytest
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[2]
MATHJAX = ROOT / "_build" / "mathjax" / "es5" / "tex-mml-chtml.js"
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
pytestmark = pytest.mark.browser

# MathJax 3 as Jupyter configures it ($...$ inline, $$...$$ display), undefined macros as errors.
MATHJAX_HEAD = """
<script>
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], processEscapes: true,
        packages: {'[-]': ['noundefined']}},
  startup: {typeset: true}
};
</script>
<script src="mathjax/tex-mml-chtml.js"></script>
"""


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, MATHJAX) if not p.exists()]
    if missing:
        pytest.fail(f"render test needs {missing}: run `make browser-deps` (make test does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def standalone_html(nb):
    """nbconvert's HTML of one notebook, its own MathJax 2 loader replaced by the local MathJax 3."""
    html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    html = re.sub(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", "", html, flags=re.S)
    assert "cdnjs.cloudflare.com/ajax/libs/mathjax" not in html
    return html.replace("</head>", MATHJAX_HEAD + "</head>", 1)


def typeset(browser, html):
    """Failed math nodes and raw macros left in the page after MathJax has typeset it."""
    page = browser.new_page()
    page.route("**/mathjax/tex-mml-chtml.js", lambda route: route.fulfill(path=str(MATHJAX)))
    try:
        page.route("http://notebook.test/", lambda route: route.fulfill(body=html, content_type="text/html"))
        page.goto("http://notebook.test/", wait_until="load")
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("() => MathJax.startup.promise")
        return page.evaluate(
            """() => ({
                containers: document.querySelectorAll('mjx-container').length,
                errors: Array.from(document.querySelectorAll('mjx-merror'))
                    .map(e => e.getAttribute('data-mjx-error') || e.textContent),
                raw: (document.body.innerText.match(/\\\\(agrad|tieset|maxone|maxtwo|Lip)\\b/g) || []),
            })"""
        )
    finally:
        page.close()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_math_renders_without_the_book(browser, path):
    result = typeset(browser, standalone_html(nbformat.read(path, as_version=4)))
    assert result["containers"] > 0, "no math was typeset at all"
    assert result["errors"] == [], f"math errors in {path.name}: {result['errors'][:5]}"
    assert result["raw"] == [], f"raw macros in {path.name}: {result['raw'][:5]}"


def test_the_check_catches_a_missing_macro_cell(browser):
    """Without its hidden macro cell, a chapter that uses the macros must fail the check above."""
    nb = nbformat.read(ROOT / "book" / "theorem.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "math-macros" not in c.metadata.get("tags", [])]
    result = typeset(browser, standalone_html(nb))
    assert any("agrad" in e for e in result["errors"]), result["errors"][:5]
