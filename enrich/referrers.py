"""Known referrers: one readable table of (type, name, hosts, search-term parameters).

Hand-compiled for trailmark, following the categories and host lists of Snowplow's referer-parser
``referers.yml`` (the PyPI ports ``referer-parser``/``pyreferrer`` are unmaintained since 2016/2021,
so the data ships here instead, trimmed to the hosts that matter for web traffic today).

A host ``name.*`` matches that registrable-domain label under any public suffix
(``google.*`` -> google.com, google.co.uk, google.de ...). Other hosts match themselves and any
subdomain (``facebook.com`` -> l.facebook.com, m.facebook.com). Android apps send
``android-app://<package>/`` referrers; their package names are listed as hosts too.
"""

from __future__ import annotations

from typing import NamedTuple


class Referrer(NamedTuple):
    type: str  # search | social | email | other
    name: str
    params: tuple[str, ...]  # query parameters holding the search term (search engines only)


# (type, name, hosts, search-term params)
REFERRERS: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    # --- email (listed first: mail.google.com must not fall into google.* search) ---
    ("email", "Gmail", ("mail.google.com", "inbox.google.com", "com.google.android.gm"), ()),
    (
        "email",
        "Outlook.com",
        (
            "outlook.live.com",
            "mail.live.com",
            "outlook.office.com",
            "outlook.office365.com",
            "outlook.cloud.microsoft",
            "com.microsoft.office.outlook",
        ),
        (),
    ),
    ("email", "Yahoo! Mail", ("mail.yahoo.com", "mail.yahoo.co.jp", "mail.yahoo.net"), ()),
    ("email", "AOL Mail", ("mail.aol.com",), ()),
    ("email", "Proton Mail", ("mail.proton.me", "mail.protonmail.com"), ()),
    ("email", "iCloud Mail", ("icloud.com", "www.icloud.com"), ()),
    ("email", "Zoho Mail", ("mail.zoho.com", "mail.zoho.eu"), ()),
    ("email", "Yandex Mail", ("mail.yandex.ru", "mail.yandex.com"), ()),
    ("email", "Mail.ru", ("e.mail.ru", "touch.mail.ru"), ()),
    (
        "email",
        "GMX",
        ("gmx.net", "gmx.de", "gmx.com", "navigator.gmx.net", "deref-gmx.net", "deref-gmx.com"),
        (),
    ),
    ("email", "Web.de", ("web.de", "deref-web.de", "deref-web-02.de"), ()),
    ("email", "T-Online Mail", ("email.t-online.de",), ()),
    ("email", "Fastmail", ("fastmail.com", "app.fastmail.com"), ()),
    ("email", "Tuta", ("tuta.com", "app.tuta.com", "mail.tutanota.com"), ()),
    ("email", "Seznam Email", ("email.seznam.cz",), ()),
    ("email", "Naver Mail", ("mail.naver.com",), ()),
    ("email", "QQ Mail", ("mail.qq.com",), ()),
    ("email", "Orange Mail", ("messagerie.orange.fr", "mail01.orange.fr"), ()),
    ("email", "Libero Mail", ("mail.libero.it",), ()),
    ("email", "Rediffmail", ("mail.rediff.com",), ()),
    # --- search ---
    (
        "search",
        "Google",
        ("google.*", "googleadservices.com", "news.google.com", "com.google.android.googlequicksearchbox"),
        ("q", "query"),
    ),
    ("search", "Bing", ("bing.com", "cn.bing.com"), ("q", "Q")),
    ("search", "Yahoo!", ("search.yahoo.*", "yahoo.*"), ("p", "q")),
    (
        "search",
        "DuckDuckGo",
        ("duckduckgo.com", "duck.com", "html.duckduckgo.com", "lite.duckduckgo.com"),
        ("q",),
    ),
    ("search", "Yandex", ("yandex.*", "ya.ru"), ("text",)),
    ("search", "Baidu", ("baidu.com", "m.baidu.com"), ("wd", "word", "kw")),
    ("search", "Ecosia", ("ecosia.org",), ("q",)),
    ("search", "Brave Search", ("search.brave.com",), ("q",)),
    ("search", "Startpage", ("startpage.com", "ixquick.com"), ("query", "q")),
    ("search", "Qwant", ("qwant.com", "lite.qwant.com"), ("q",)),
    ("search", "Naver", ("search.naver.com", "m.search.naver.com", "naver.com"), ("query",)),
    ("search", "Daum", ("search.daum.net", "daum.net"), ("q",)),
    ("search", "Seznam", ("search.seznam.cz", "seznam.cz"), ("q",)),
    ("search", "Sogou", ("sogou.com", "m.sogou.com"), ("query", "keyword")),
    ("search", "360 Search", ("so.com", "m.so.com"), ("q",)),
    ("search", "Ask", ("ask.com",), ("q",)),
    ("search", "AOL", ("search.aol.com", "search.aol.co.uk"), ("q", "query")),
    ("search", "Mojeek", ("mojeek.com",), ("q",)),
    ("search", "Kagi", ("kagi.com",), ("q",)),
    ("search", "Yep", ("yep.com",), ("q",)),
    ("search", "Petal Search", ("petalsearch.com",), ("query",)),
    ("search", "Coc Coc", ("coccoc.com",), ("query",)),
    ("search", "MetaGer", ("metager.org", "metager.de"), ("eingabe",)),
    ("search", "Swisscows", ("swisscows.com",), ("query",)),
    ("search", "Perplexity", ("perplexity.ai",), ("q",)),
    # --- social ---
    (
        "social",
        "Facebook",
        ("facebook.com", "fb.com", "fb.me", "messenger.com", "com.facebook.katana", "com.facebook.orca"),
        (),
    ),
    ("social", "Instagram", ("instagram.com", "com.instagram.android"), ()),
    ("social", "Threads", ("threads.net", "threads.com"), ()),
    ("social", "Twitter", ("t.co", "twitter.com", "x.com", "com.twitter.android"), ()),
    ("social", "LinkedIn", ("linkedin.com", "lnkd.in", "com.linkedin.android"), ()),
    ("social", "Reddit", ("reddit.com", "redd.it", "com.reddit.frontpage"), ()),
    ("social", "Pinterest", ("pinterest.*", "pin.it"), ()),
    ("social", "YouTube", ("youtube.com", "youtu.be", "m.youtube.com"), ()),
    ("social", "TikTok", ("tiktok.com",), ()),
    ("social", "Snapchat", ("snapchat.com",), ()),
    ("social", "Tumblr", ("tumblr.com",), ()),
    ("social", "VK", ("vk.com", "vk.ru"), ()),
    ("social", "OK", ("ok.ru", "odnoklassniki.ru"), ()),
    ("social", "Weibo", ("weibo.com", "weibo.cn", "t.cn"), ()),
    ("social", "Quora", ("quora.com",), ()),
    ("social", "Bluesky", ("bsky.app",), ()),
    ("social", "Mastodon", ("mastodon.social", "mastodon.online", "mstdn.social"), ()),
    ("social", "Discord", ("discord.com", "discordapp.com"), ()),
    ("social", "Telegram", ("t.me", "telegram.org", "web.telegram.org", "org.telegram.messenger"), ()),
    ("social", "WhatsApp", ("whatsapp.com", "wa.me", "web.whatsapp.com"), ()),
    ("social", "Hacker News", ("news.ycombinator.com",), ()),
    ("social", "Medium", ("medium.com",), ()),
    ("social", "XING", ("xing.com",), ()),
    ("social", "Vimeo", ("vimeo.com",), ()),
    ("social", "Twitch", ("twitch.tv",), ()),
    ("social", "LINE", ("line.me",), ()),
    ("social", "Slack", ("slack.com", "app.slack.com", "com.slack"), ()),
    ("social", "Stack Overflow", ("stackoverflow.com", "stackexchange.com"), ()),
    ("social", "GitHub", ("github.com",), ()),
    ("social", "Flickr", ("flickr.com",), ()),
    ("social", "Yelp", ("yelp.com",), ()),
    ("social", "Product Hunt", ("producthunt.com",), ()),
    # --- other well-known (AI assistants: GA4 has no channel for them yet; they land in Referral) ---
    ("other", "ChatGPT", ("chatgpt.com", "chat.openai.com"), ()),
    ("other", "Claude", ("claude.ai",), ()),
    ("other", "Gemini", ("gemini.google.com",), ()),
    ("other", "Copilot", ("copilot.microsoft.com",), ()),
]

# Hosts that are video platforms (GA4 "Organic Video"/"Paid Video") and shopping sites.
VIDEO_SITES = frozenset({"YouTube", "Vimeo", "TikTok", "Twitch"})
# Shopping sites by domain label (GA4's "Paid/Organic Shopping" source list, abridged).
SHOPPING_LABELS = frozenset(
    {
        "amazon",
        "ebay",
        "etsy",
        "walmart",
        "aliexpress",
        "shopify",
        "idealo",
        "alibaba",
        "rakuten",
        "mercadolibre",
        "zalando",
        "target",
        "bestbuy",
        "otto",
        "google_shopping",
        "shopping",
    }
)


def is_shopping(source: str) -> bool:
    """``amazon``, ``amazon.de``, ``www.ebay.co.uk``, ``shopping.google.com`` -> True."""
    return any(label in SHOPPING_LABELS for label in source.lower().replace("-", "_").split("."))


def build_index() -> tuple[dict[str, Referrer], dict[str, Referrer]]:
    """Return (exact host -> referrer, ``label.*`` wildcard -> referrer); the first listing wins."""
    exact: dict[str, Referrer] = {}
    wild: dict[str, Referrer] = {}
    for rtype, name, hosts, params in REFERRERS:
        ref = Referrer(rtype, name, params)
        for h in hosts:
            target = wild if h.endswith(".*") else exact
            target.setdefault(h.removesuffix(".*") if h.endswith(".*") else h, ref)
    return exact, wild


# utm_source spellings that name a known referrer without being one of its hosts.
SOURCE_ALIASES = {
    "fb": "Facebook",
    "ig": "Instagram",
    "tw": "Twitter",
    "li": "LinkedIn",
    "yt": "YouTube",
    "adwords": "Google",
    "googleads": "Google",
    "google_ads": "Google",
    "google-ads": "Google",
    "bingads": "Bing",
    "bing_ads": "Bing",
    "microsoft": "Bing",
    "microsoftads": "Bing",
    "msn": "Bing",
    "meta": "Facebook",
    "x": "Twitter",
    "newsletter": "",
    "gmail": "Gmail",
    "outlook": "Outlook.com",
}


class ReferrerClassifier:
    """Maps hosts and utm_source values to known referrers; cached, the host set is small."""

    def __init__(self, cache_size: int = 20000) -> None:
        import tldextract

        # No suffix-list URLs and no cache dir: the snapshot bundled in the wheel, never a fetch.
        self._tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
        self._exact, self._wild = build_index()
        self._by_name: dict[str, Referrer] = {}
        for rtype, name, hosts, params in REFERRERS:
            ref = Referrer(rtype, name, params)
            self._by_name.setdefault(name.lower(), ref)
            for h in hosts:
                # "google.*", "bing.com": a bare domain label names its owner (subdomains don't:
                # "mail" must not mean Gmail); short labels like "web", "ok" are too ambiguous.
                parts = h.split(".")
                if len(parts) == 2 and len(parts[0]) > 3:
                    self._by_name.setdefault(parts[0], ref)
        for alias, name in SOURCE_ALIASES.items():
            if name:
                self._by_name[alias] = self._by_name[name.lower()]
        from functools import lru_cache

        self.host = lru_cache(maxsize=cache_size)(self._host)
        self.source = lru_cache(maxsize=cache_size)(self._source)
        self.registered_domain = lru_cache(maxsize=cache_size)(self._registered_domain)

    def _registered_domain(self, host: str) -> str:
        """eTLD+1 (``shop.example.co.uk`` -> ``example.co.uk``); the host itself for IPs/localhost."""
        ext = self._tld.extract_str(host)
        return f"{ext.domain}.{ext.suffix}" if ext.domain and ext.suffix else host

    def _host(self, host: str) -> Referrer | None:
        h = host.lower()
        parts = h.split(".")
        for i in range(len(parts) - 1):
            if ref := self._exact.get(".".join(parts[i:])):
                return ref
        ext = self._tld.extract_str(h)
        if not ext.domain:
            return None
        subs = ext.subdomain.split(".") if ext.subdomain else []
        for i in range(len(subs) + 1):
            key = ".".join([*subs[i:], ext.domain])
            if ref := self._wild.get(key):
                return ref
        return None

    def _source(self, source: str) -> Referrer | None:
        s = source.strip().lower()
        if not s:
            return None
        if ref := self._by_name.get(s):
            return ref
        if "." in s:
            return self._host(s.split("/")[0])
        return None
