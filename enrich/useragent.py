"""User-agent parsing: ua-parser (uap-core regexes) on the Rust ``ua_parser_rs`` resolver, plus bots.

The Rust resolver is used explicitly (not the package's "best available" guess) so a missing
accelerator fails loudly at start-up instead of silently running ~50x slower in pure Python.
Results are cached per UA string: real traffic repeats a small set of strings.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from crawlerdetect import CrawlerDetect
from ua_parser import Domain, load_lazy_builtins
from ua_parser.regex import Resolver as RustResolver


class UAInfo(NamedTuple):
    browser: str
    browser_version: str
    os: str
    os_version: str
    device_type: str
    device_brand: str
    device_model: str
    is_bot: bool
    bot_name: str


# Automation / headless markers that crawlerdetect deliberately leaves alone or names vaguely.
_HEADLESS = re.compile(
    r"(HeadlessChrome|PhantomJS|Lighthouse|Chrome-Lighthouse|SlimerJS|Puppeteer|Playwright|Selenium"
    r"|Electron/\S+ .*Headless|HtmlUnit|Nightmare|Cypress|WebdriverIO)",
    re.IGNORECASE,
)
_TV = re.compile(
    r"SmartTV|SMART-TV|Smart TV|\bTizen\b.*\bTV\b|Web0S|WebOS.*TV|AppleTV|Apple TV|CrKey|BRAVIA|Roku"
    r"|AFT[A-Z]|HbbTV|GoogleTV|Android TV|\bTV\b.*Safari",
    re.IGNORECASE,
)
_CONSOLE = re.compile(r"PlayStation|Xbox|Nintendo", re.IGNORECASE)
_WEARABLE = re.compile(r"Watch|Wear OS", re.IGNORECASE)
_TABLET = re.compile(r"iPad|Tablet|Kindle|Silk/|PlayBook|Nexus (7|9|10)\b|SM-T\d|SM-X\d", re.IGNORECASE)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Android.*Mobile|Windows Phone|IEMobile|Opera Mini|BlackBerry|BB10")
_DESKTOP_OS = {
    "Windows",
    "Mac OS X",
    "Linux",
    "Ubuntu",
    "Fedora",
    "Debian",
    "Chrome OS",
    "FreeBSD",
    "OpenBSD",
    "NetBSD",
    "Solaris",
    "Arch Linux",
    "Mint",
    "Linux Mint",
    "openSUSE",
    "Red Hat",
    "Gentoo",
    "CentOS",
    "Slackware",
}
# A plain HTTP client is not a browser; crawlerdetect flags most, this catches the rest.
_CLIENT_LIB = re.compile(
    r"^(curl|Wget|python-requests|python-urllib|aiohttp|httpx|Go-http-client|okhttp|Java/|libwww-perl"
    r"|PostmanRuntime|axios|node-fetch|undici|Apache-HttpClient|Scrapy|HTTPie)",
    re.IGNORECASE,
)
_BOT_NAME = re.compile(r"([A-Za-z][\w.\-]*(?:bot|spider|crawler|crawl|slurp)[\w\-]*)", re.IGNORECASE)


def _version(*parts: str | None) -> str:
    out: list[str] = []
    for p in parts:
        if not p:
            break
        out.append(p)
    return ".".join(out)


class UserAgentParser:
    """Parses UA strings into flat fields; one instance per Enricher (regexes compiled once)."""

    def __init__(self, detect_bots: bool = True, cache_size: int = 20000) -> None:
        self._resolver = RustResolver(load_lazy_builtins())
        self._crawlers = CrawlerDetect()
        self._detect_bots = detect_bots
        self.parse = lru_cache(maxsize=cache_size)(self._parse)

    def _bot(self, ua: str, ua_family: str, device_family: str) -> tuple[bool, str]:
        if m := _HEADLESS.search(ua):
            return True, m.group(1)
        if m := _CLIENT_LIB.search(ua):
            return True, m.group(1).rstrip("/")
        if device_family == "Spider":  # uap-core knows it: its family is the canonical bot name
            return True, (ua_family if ua_family != "Other" else "") or _bot_name(ua) or "Spider"
        if self._crawlers.is_crawler(ua):
            return True, _bot_name(ua) or self._crawlers.get_matches() or ua_family
        return False, ""

    def _parse(self, ua: str) -> UAInfo:
        r = self._resolver(ua, Domain.ALL)
        agent, os_, dev = r.user_agent, r.os, r.device
        browser = agent.family if agent else ""
        os_name = os_.family if os_ else ""
        dev_family = dev.family if dev else ""
        brand = (dev.brand or "") if dev else ""
        model = (dev.model or "") if dev else ""
        is_bot, bot_name = self._bot(ua, browser, dev_family) if self._detect_bots and ua else (False, "")
        if is_bot:
            dtype = "bot"
        elif not ua:
            dtype = ""
        else:
            dtype = _device_type(ua, os_name, dev_family)
        if is_bot or (dev_family == "Other" and not brand):
            brand = model = ""  # uap-core's "Spider"/"Desktop" for bots is not a device
        elif brand.startswith("Generic"):
            brand = ""  # "Generic_Android_Tablet": a class, not a maker
        return UAInfo(
            browser=browser if browser != "Other" else "",
            browser_version=_version(agent.major, agent.minor, agent.patch) if agent else "",
            os=os_name if os_name != "Other" else "",
            os_version=_version(os_.major, os_.minor, os_.patch) if os_ else "",
            device_type=dtype,
            device_brand=brand,
            device_model=model,
            is_bot=is_bot,
            bot_name=bot_name,
        )


def _bot_name(ua: str) -> str:
    m = _BOT_NAME.search(ua)
    return m.group(1) if m else ""


def _device_type(ua: str, os_name: str, dev_family: str) -> str:
    """ua-parser has no device class, so derive one from well-known UA tokens, most specific first."""
    if _CONSOLE.search(ua):
        return "console"
    if _TV.search(ua):
        return "tv"
    if _TABLET.search(ua) or (os_name == "Android" and "Mobile" not in ua):
        return "tablet"
    if _WEARABLE.search(dev_family) and os_name in ("watchOS", "Wear OS", "Android"):
        return "wearable"
    if _MOBILE.search(ua) or os_name in ("iOS", "Android", "Windows Phone", "KaiOS"):
        return "mobile"
    if os_name in _DESKTOP_OS or "Windows" in os_name or "Macintosh" in ua or "X11" in ua:
        return "desktop"
    return "other"
