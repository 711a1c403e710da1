"""Effect size and severity of a shift between two rates.

Every monitored stream is a rate in [0, 1] (an error rate, the fraction of
values outside a reference band), so one scale measures every shift:
Cohen's *h*, the difference of arcsine-square-root transformed rates. It
weighs a change near 0 or 1 more than the same change near 0.5, which is how
a person on call reads "1 % -> 5 % errors" versus "50 % -> 54 %".

>>> round(cohens_h(0.10, 0.30), 3), round(cohens_h(0.10, 0.20), 3)
(0.516, 0.284)
>>> round(cohens_h(0.30, 0.10), 3)
-0.516
>>> severity_of(0.516, warning=0.2, critical=0.5), severity_of(0.25, warning=0.2, critical=0.5)
('critical', 'warning')
>>> severity_of(-0.1, warning=0.2, critical=0.5)
'info'
"""

from __future__ import annotations

import math

SEVERITIES = ("info", "warning", "critical")


def cohens_h(before: float, after: float) -> float:
    """Signed effect size of a change from rate ``before`` to rate ``after``."""
    b = min(1.0, max(0.0, before))
    a = min(1.0, max(0.0, after))
    return 2.0 * (math.asin(math.sqrt(a)) - math.asin(math.sqrt(b)))


def severity_of(effect: float, *, warning: float, critical: float) -> str:
    """Map an effect size (either sign) to ``info``, ``warning`` or ``critical``."""
    size = abs(effect)
    if size >= critical:
        return "critical"
    if size >= warning:
        return "warning"
    return "info"


def severity_rank(severity: str) -> int:
    """Order of a severity name (unknown names rank lowest).

    >>> severity_rank("critical") > severity_rank("warning") > severity_rank("info")
    True
    """
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return -1
