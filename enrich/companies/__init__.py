"""Company profiles from public sources, looked up by domain off the event path.

The enricher asks (``LookupRequests.want``); the ``CompanyWorker`` fetches the company's website
(schema.org, OpenGraph, page metadata), DNS (MX, TXT) and RDAP (registration date) through an
SSRF guard, and stores one ``company_profiles_data`` row per site that asked.
"""

from enrich.companies.errors import LookupFailed, NotFound, SourceFailed, TargetRefused
from enrich.companies.profile import Profile
from enrich.companies.wanted import LookupRequests
from enrich.companies.worker import CompanyLookup, CompanyWorker

__all__ = [
    "CompanyLookup",
    "CompanyWorker",
    "LookupFailed",
    "LookupRequests",
    "NotFound",
    "Profile",
    "SourceFailed",
    "TargetRefused",
]
