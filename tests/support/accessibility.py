"""axe-core in the test browser: the page's accessibility violations, by the rules of WCAG 2.1 AA.

The script is the npm package's axe.min.js, vendored (tests/support/vendor/README.md): the tests
need no network.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
BLOCKING = ("serious", "critical")

_RUN = """
var done = arguments[arguments.length - 1];
axe.run(document, {
    runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]},
    resultTypes: ["violations"]
}).then(function (result) {
    done(result.violations.map(function (v) {
        return {
            id: v.id,
            impact: v.impact,
            help: v.help,
            nodes: v.nodes.slice(0, 5).map(function (n) { return n.target.join(" ") + " :: " + n.failureSummary; })
        };
    }));
}).catch(function (error) { done([{id: "axe-error", impact: "critical", help: String(error), nodes: []}]); });
"""


@lru_cache(maxsize=1)
def _script() -> str:
    return AXE.read_text(encoding="utf-8")


def violations(driver, impacts: tuple[str, ...] = BLOCKING) -> list[dict]:
    """The page's violations of these impacts, as axe reports them (id, impact, help, nodes)."""
    if not driver.execute_script("return typeof window.axe === 'object';"):
        driver.execute_script(_script())
    driver.set_script_timeout(60)
    found = driver.execute_async_script(_RUN)
    return [v for v in found if v["impact"] in impacts]


def describe(found: list[dict]) -> str:
    return "\n".join(f"{v['impact']} {v['id']}: {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in found)
