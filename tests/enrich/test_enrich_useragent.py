"""User agents: real strings from current browsers, devices and bots."""

import pytest
import ua_parser

from enrich.useragent import UserAgentParser
from tests.enrich.helpers import page_event

CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 "
    "Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAMSUNG = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36"
)
SAMSUNG_TAB = (
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Safari/537.36"
)
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 Edg/131.0.2903.70"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Safari/605.1.15"
)
PIXEL = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.39 Mobile Safari/537.36"
)
PS5 = (
    "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 "
    "Safari/605.1.15"
)
TIZEN_TV = (
    "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 85.0.4183.93/6.0 TV Safari/537.36"
)
CHROMEOS = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)

BROWSERS = [
    # ua, browser, major, os, os_version prefix, device type, brand, model
    (CHROME_WIN, "Chrome", "131", "Windows", "10", "desktop", "", ""),
    (SAFARI_IOS, "Mobile Safari", "17", "iOS", "17.5", "mobile", "Apple", "iPhone"),
    (IPAD, "Mobile Safari", "16", "iOS", "16.6", "tablet", "Apple", "iPad"),
    (FIREFOX_LINUX, "Firefox", "133", "Linux", "", "desktop", "", ""),
    (SAMSUNG, "Samsung Internet", "25", "Android", "14", "mobile", "Samsung", "SM-S918B"),
    (SAMSUNG_TAB, "Samsung Internet", "23", "Android", "13", "tablet", "", "SM-X710"),
    (EDGE, "Edge", "131", "Windows", "10", "desktop", "", ""),
    (SAFARI_MAC, "Safari", "17", "Mac OS X", "10.15", "desktop", "Apple", "Mac"),
    (PIXEL, "Chrome Mobile", "131", "Android", "14", "mobile", "Google", "Pixel 8"),
    (PS5, "Safari", "13", "", "", "console", "Sony", "PlayStation 5"),
    (TIZEN_TV, "Safari", "", "Tizen", "6.0", "tv", "Samsung", ""),
    (CHROMEOS, "Chrome", "131", "Chrome OS", "14541", "desktop", "", ""),
]


@pytest.mark.parametrize(("ua", "browser", "major", "os", "osv", "dtype", "brand", "model"), BROWSERS)
def test_browsers(enricher, ua, browser, major, os, osv, dtype, brand, model):
    out = enricher.enrich(page_event(user_agent=ua))
    assert out["ua_browser"] == browser
    assert out["ua_browser_version"].split(".")[0] == major
    assert out["ua_os"] == os
    assert out["ua_os_version"].startswith(osv)
    assert out["ua_device_type"] == dtype
    assert out["ua_device_brand"] == brand
    if model:
        assert out["ua_device_model"] == model
    assert out["is_bot"] is False and out["bot_name"] == ""


BOTS = [
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Googlebot"),
    (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Googlebot",
    ),
    (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) "
        "Chrome/116.0.1938.76 Safari/537.36",
        "bingbot",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.28 "
        "Safari/537.36",
        "HeadlessChrome",
    ),
    (
        "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
        "Chrome-Lighthouse",
    ),
    (
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
        "PhantomJS",
    ),
    ("curl/8.5.0", "curl"),
    ("python-requests/2.32.3", "python-requests"),
    (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "GPTBot",
    ),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "FacebookBot"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "AhrefsBot"),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "YandexBot"),
    ("Wget/1.21.4", "Wget"),
]


@pytest.mark.parametrize(("ua", "name"), BOTS)
def test_bots(enricher, ua, name):
    out = enricher.enrich(page_event(user_agent=ua))
    assert out["is_bot"] is True
    assert out["bot_name"].lower().startswith(name.lower())
    assert out["ua_device_type"] == "bot"
    assert out["ua_device_brand"] == "" and out["ua_device_model"] == ""


def test_in_app_browser_is_not_a_bot(enricher):
    ua = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148 [FBAN/FBIOS;FBAV/460.0.0.44.109;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.4]"
    )
    out = enricher.enrich(page_event(user_agent=ua))
    assert (out["ua_browser"], out["ua_os"], out["ua_device_type"], out["is_bot"]) == (
        "Facebook",
        "iOS",
        "mobile",
        False,
    )


def test_context_user_agent_used_when_header_missing(enricher):
    ev = page_event()
    ev["context"]["userAgent"] = FIREFOX_LINUX
    assert enricher.enrich(ev)["ua_browser"] == "Firefox"


def test_empty_and_garbage_ua(enricher):
    assert enricher.enrich(page_event(user_agent=""))["ua_device_type"] == ""
    out = enricher.enrich(page_event(user_agent="\x00\xff garbage ((("))
    assert out["enrich_errors"] == [] and out["is_bot"] is False


def test_rust_resolver_is_used():
    # The pure-Python fallback is ~50x slower; make sure the accelerator is what we run on.
    assert ua_parser.BestAvailableResolver.__module__ == "ua_parser.regex"
    p = UserAgentParser()
    assert type(p._resolver).__module__ == "ua_parser.regex"


def test_ua_cache_hits():
    p = UserAgentParser()
    p.parse(CHROME_WIN)
    p.parse(CHROME_WIN)
    assert p.parse.cache_info().hits == 1
