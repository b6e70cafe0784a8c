"""What a company lookup raises; the worker stores each as the profile's status, never crashes on one.

Translated at each adapter (httpx in ``fetch``, dnspython in ``dnsinfo``, JSON in ``rdap``) with
``raise ... from exc``, under trailmark's one error tree (trailmark/errors.py)::

    LookupFailed (TrailmarkError)
    ├── TargetRefused (Rejected)     not fetched on purpose: not a public address, robots.txt, a
    │                                scheme, port or credentials in a URL: status ``refused``
    ├── NotFound (Rejected)          the domain or page does not exist: status ``not_found``
    └── SourceFailed (Unavailable)   network error, timeout, an answer that cannot be read, after
                                     the retries: status ``error``
"""

from __future__ import annotations

from trailmark.errors import Rejected, TrailmarkError, Unavailable


class LookupFailed(TrailmarkError):
    """Base of every lookup error; ``status`` is what the profile row records."""

    status = "error"


class TargetRefused(LookupFailed, Rejected):
    """The lookup refused to fetch this target (SSRF guard, robots.txt, URL shape)."""

    status = "refused"


class NotFound(LookupFailed, Rejected):
    """The domain has no such record or page."""

    status = "not_found"


class SourceFailed(LookupFailed, Unavailable):
    """A source could not answer (network, timeout, HTTP error, unreadable answer)."""

    status = "error"


__all__ = ["LookupFailed", "NotFound", "SourceFailed", "TargetRefused"]
