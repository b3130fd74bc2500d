"""The accessibility check of the browser tests: axe-core run in the page the browser shows.

axe-core's axe.min.js comes inside an installed wheel (axe-playwright-python ships it; only the
file is read, Playwright is not used), so nothing is downloaded when the tests run. WebDriver runs
the injected script outside the page's Content-Security-Policy, which forbids inline scripts."""

from __future__ import annotations

import functools
from importlib import resources

WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")

# axe.run returns a promise; WebDriver's asynchronous script hands its result to the last argument.
_RUN = """
const [context, options, done] = arguments;
axe.run(context || document, options).then(
    (results) => done({violations: results.violations.map((rule) => ({
        id: rule.id, impact: rule.impact, help: rule.help,
        targets: rule.nodes.map((node) => node.target.join(" ")),
    }))}),
    (error) => done({error: String(error)}));
"""


@functools.cache
def axe_source() -> str:
    """The text of axe.min.js from the installed package."""
    return (resources.files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")


def axe_version() -> str:
    """The axe-core version named in the file's first line (``/*! axe v4.12.1``)."""
    return axe_source().split("\n", 1)[0].removeprefix("/*! axe v").strip()


def accessibility_violations(browser, context: str | None = None) -> list[dict]:
    """The violations of the WCAG 2.0/2.1 A and AA rules that axe-core finds in the page the
    browser shows (or in the part the CSS selector ``context`` picks): each a dict with the rule's
    id, impact, help text and the targets (CSS selectors) of the offending nodes.

    Raises: AssertionError: axe-core could not run in the page.
    """
    if not browser.execute_script("return typeof window.axe === 'object'"):
        browser.execute_script(axe_source())
    options = {"runOnly": {"type": "tag", "values": list(WCAG_TAGS)}, "resultTypes": ["violations"]}
    result = browser.execute_async_script(_RUN, context, options)
    assert "error" not in result, f"axe-core failed on {browser.current_url}: {result['error']}"
    return result["violations"]


def check_accessibility(browser, context: str | None = None) -> None:
    """Fails when axe-core finds any violation of WCAG 2.0/2.1 level A or AA in the page (or in the
    part ``context`` selects), listing each rule's id, impact and offending nodes.

    Raises: AssertionError: a violation was found, or axe-core could not run.
    """
    violations = accessibility_violations(browser, context)
    assert not violations, f"accessibility violations on {browser.current_url}:\n" + "\n".join(
        f"  {v['id']} ({v['impact']}): {v['help']}; at {', '.join(v['targets'])}" for v in violations)
