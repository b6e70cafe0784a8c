"""DNS signals of a domain (dnspython): MX -> the mail provider, TXT -> technologies in use.

SaaS products ask a customer to prove they own a domain with a TXT record (``google-site-verification=``,
``MS=``, ``atlassian-domain-verification=``, ...), and SPF records name who sends mail for it
(``include:sendgrid.net``): both say which services a company uses. Only the first label of each
token is read; no token value is stored.
"""

from __future__ import annotations

from typing import NamedTuple

import dns.asyncresolver
import dns.exception
import dns.resolver

from enrich.companies.errors import NotFound, SourceFailed

# MX host suffix -> provider (the first match wins; suffixes are compared on label boundaries)
MAIL_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("aspmx.l.google.com", "Google Workspace"),
    ("googlemail.com", "Google Workspace"),
    ("google.com", "Google Workspace"),
    ("mail.protection.outlook.com", "Microsoft 365"),
    ("outlook.com", "Microsoft 365"),
    ("zoho.com", "Zoho Mail"),
    ("zoho.eu", "Zoho Mail"),
    ("zoho.in", "Zoho Mail"),
    ("pphosted.com", "Proofpoint"),
    ("ppe-hosted.com", "Proofpoint"),
    ("mimecast.com", "Mimecast"),
    ("barracudanetworks.com", "Barracuda"),
    ("messagingengine.com", "Fastmail"),
    ("protonmail.ch", "Proton Mail"),
    ("yandex.net", "Yandex 360"),
    ("yandex.ru", "Yandex 360"),
    ("secureserver.net", "GoDaddy"),
    ("emailsrvr.com", "Rackspace"),
    ("awsapps.com", "Amazon WorkMail"),
    ("amazonaws.com", "Amazon"),
    ("ovh.net", "OVHcloud"),
    ("ionos.com", "IONOS"),
    ("ionos.de", "IONOS"),
    ("kundenserver.de", "IONOS"),
    ("qq.com", "Tencent Exmail"),
    ("icloud.com", "iCloud Mail"),
    ("mailgun.org", "Mailgun"),
)
# TXT record prefix (lower case) -> technology
TXT_TOKENS: tuple[tuple[str, str], ...] = (
    ("google-site-verification=", "Google Search Console"),
    ("ms=ms", "Microsoft 365"),
    ("facebook-domain-verification=", "Facebook"),
    ("atlassian-domain-verification=", "Atlassian"),
    ("docusign=", "DocuSign"),
    ("stripe-verification=", "Stripe"),
    ("apple-domain-verification=", "Apple"),
    ("adobe-idp-site-verification=", "Adobe"),
    ("adobe-sign-verification=", "Adobe Sign"),
    ("zoom_verify_", "Zoom"),
    ("hubspot-developer-verification=", "HubSpot"),
    ("slack-domain-verification=", "Slack"),
    ("dropbox-domain-verification=", "Dropbox"),
    ("miro-verification=", "Miro"),
    ("onetrust-domain-verification=", "OneTrust"),
    ("globalsign-domain-verification=", "GlobalSign"),
    ("_globalsign-domain-verification=", "GlobalSign"),
    ("cisco-ci-domain-verification=", "Cisco Webex"),
    ("webexdomainverification", "Cisco Webex"),
    ("atlassian-sending-domain-verification=", "Atlassian"),
    ("mailchimp=", "Mailchimp"),
    ("mandrill_verify", "Mailchimp"),
    ("zapier-domain-verification", "Zapier"),
    ("notion-domain-verification", "Notion"),
    ("openai-domain-verification=", "OpenAI"),
    ("anthropic-domain-verification", "Anthropic"),
    ("canva-site-verification=", "Canva"),
    ("loom-site-verification=", "Loom"),
    ("pinterest-site-verification=", "Pinterest"),
    ("yandex-verification", "Yandex Webmaster"),
    ("have-i-been-pwned-verification=", "Have I Been Pwned"),
    ("knowbe4-site-verification=", "KnowBe4"),
    ("segment-site-verification=", "Segment"),
    ("intercom-domain-verification", "Intercom"),
    ("asana-verification", "Asana"),
    ("figma-verification", "Figma"),
    ("github-verification", "GitHub"),
    ("_github-challenge", "GitHub"),
    ("gitlab-verification", "GitLab"),
)
# SPF include -> technology (who sends mail for the domain)
SPF_INCLUDES: tuple[tuple[str, str], ...] = (
    ("_spf.google.com", "Google Workspace"),
    ("spf.protection.outlook.com", "Microsoft 365"),
    ("sendgrid.net", "SendGrid"),
    ("mailgun.org", "Mailgun"),
    ("servers.mcsv.net", "Mailchimp"),
    ("mandrillapp.com", "Mailchimp"),
    ("_spf.salesforce.com", "Salesforce"),
    ("mail.zendesk.com", "Zendesk"),
    ("amazonses.com", "Amazon SES"),
    ("spf.mandrillapp.com", "Mailchimp"),
    ("hubspotemail.net", "HubSpot"),
    ("_spf.createsend.com", "Campaign Monitor"),
    ("spf.sparkpostmail.com", "SparkPost"),
    ("mktomail.com", "Marketo"),
    ("_spf.intercom.io", "Intercom"),
    ("spf.freshdesk.com", "Freshdesk"),
    ("zoho.com", "Zoho Mail"),
    ("zoho.eu", "Zoho Mail"),
    ("pphosted.com", "Proofpoint"),
    ("_spf.mlsend.com", "MailerLite"),
    ("spf.brevo.com", "Brevo"),
    ("sendinblue.com", "Brevo"),
    ("postmarkapp.com", "Postmark"),
)


class DnsSignals(NamedTuple):
    mail_provider: str
    mx: list[str]
    technologies: list[str]


def _suffix(host: str, suffix: str) -> bool:
    return host == suffix or host.endswith("." + suffix)


def mail_provider(domain: str, mx_hosts: list[str]) -> str:
    """The provider behind the MX hosts: a known one, ``self-hosted`` (MX under the domain itself),
    ``other`` (someone else), or '' (no MX)."""
    for host in mx_hosts:
        for suffix, name in MAIL_PROVIDERS:
            if _suffix(host, suffix):
                return name
    if not mx_hosts:
        return ""
    if any(_suffix(h, domain) for h in mx_hosts):
        return "self-hosted"
    return "other"


def technologies(txt: list[str]) -> list[str]:
    """Technologies named by TXT verification tokens and SPF includes, in first-seen order."""
    found: list[str] = []
    for record in txt:
        low = record.strip().lower()
        if low.startswith("v=spf1"):
            for term in low.split()[1:]:
                term = term.lstrip("+")
                if term.startswith("include:"):
                    inc = term.removeprefix("include:")
                elif term.startswith("redirect="):
                    inc = term.removeprefix("redirect=")
                else:
                    continue
                found += [name for suffix, name in SPF_INCLUDES if _suffix(inc, suffix)][:1]
            continue
        for prefix, name in TXT_TOKENS:
            if low.startswith(prefix):
                found.append(name)
                break
    return list(dict.fromkeys(found))


async def _records(resolver: dns.asyncresolver.Resolver, domain: str, rdtype: str) -> list[str]:
    try:
        answer = await resolver.resolve(domain, rdtype, search=False)
    except dns.resolver.NoAnswer:
        return []
    except dns.resolver.NXDOMAIN as exc:
        raise NotFound(f"{domain}: no such domain") from exc
    except dns.exception.DNSException as exc:
        raise SourceFailed(f"{domain} {rdtype}: {type(exc).__name__}") from exc
    if rdtype == "MX":
        ordered = sorted(answer, key=lambda r: r.preference)
        return [r.exchange.to_text(omit_final_dot=True).lower() for r in ordered]
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


async def dns_signals(resolver: dns.asyncresolver.Resolver, domain: str) -> DnsSignals:
    """MX and TXT of ``domain``; NotFound for a domain that does not exist, SourceFailed otherwise."""
    mx = await _records(resolver, domain, "MX")
    txt = await _records(resolver, domain, "TXT")
    return DnsSignals(mail_provider(domain, mx), mx[:10], technologies(txt))


__all__ = ["MAIL_PROVIDERS", "DnsSignals", "dns_signals", "mail_provider", "technologies"]
