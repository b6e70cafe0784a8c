"""Contact: emails, companies, phones and names from identify traits and form submits."""

import pytest

from tests.enrich.helpers import page_event


def identify(traits, ip="", **extra):
    return page_event(type="identify", traits=traits, ip=ip, **extra)


@pytest.mark.parametrize(
    ("raw", "email", "domain", "free", "disposable", "company_domain", "company_name"),
    [
        (
            "John.Smith@Acme-Widgets.co.uk",
            "john.smith@acme-widgets.co.uk",
            "acme-widgets.co.uk",
            False,
            False,
            "acme-widgets.co.uk",
            "Acme Widgets",
        ),
        ("  ceo@Siemens.DE ", "ceo@siemens.de", "siemens.de", False, False, "siemens.de", "Siemens"),
        (
            "jane@eu.mail.bigcorp.com",
            "jane@eu.mail.bigcorp.com",
            "eu.mail.bigcorp.com",
            False,
            False,
            "bigcorp.com",
            "Bigcorp",
        ),
        ("someone@gmail.com", "someone@gmail.com", "gmail.com", True, False, "", ""),
        ("user@yahoo.co.jp", "user@yahoo.co.jp", "yahoo.co.jp", True, False, "", ""),
        ("test@GMX.de", "test@gmx.de", "gmx.de", True, False, "", ""),
        ("ko@naver.com", "ko@naver.com", "naver.com", True, False, "", ""),
        ("x@proton.me", "x@proton.me", "proton.me", True, False, "", ""),
        ("spam@mailinator.com", "spam@mailinator.com", "mailinator.com", True, True, "", ""),
        ("tmp@guerrillamail.com", "tmp@guerrillamail.com", "guerrillamail.com", False, True, "", ""),
        ("müller@bücher.de", "müller@bücher.de", "bücher.de", False, False, "bücher.de", "Bücher"),
    ],
)
def test_emails(enricher, raw, email, domain, free, disposable, company_domain, company_name):
    out = enricher.enrich(identify({"email": raw}))
    assert out["enrich_errors"] == []
    assert (out["email"], out["email_domain"]) == (email, domain)
    assert (out["email_free"], out["email_disposable"]) == (free, disposable)
    assert (out["company_domain"], out["company_name"]) == (company_domain, company_name)


@pytest.mark.parametrize("raw", ["not-an-email", "a@b", "john@@example.com", "x@-bad-.com"])
def test_invalid_email_recorded_not_dropped(enricher, raw):
    out = enricher.enrich(identify({"email": raw, "firstName": "Ann"}))
    assert out["email"] == ""
    assert len(out["enrich_errors"]) == 1 and out["enrich_errors"][0].startswith("email: ")
    assert out["first_name"] == "Ann"  # the rest of the contact still enriched


@pytest.mark.parametrize(
    ("raw", "ip", "e164", "country", "line_type", "tz"),
    [
        ("+1 650-253-0000", "", "+16502530000", "US", "fixed_line_or_mobile", "America/Los_Angeles"),
        ("(650) 253-0000", "8.8.8.8", "+16502530000", "US", "fixed_line_or_mobile", "America/Los_Angeles"),
        ("+49 151 23456789", "", "+4915123456789", "DE", "mobile", "Europe/Berlin"),
        ("030 901820", "85.214.132.117", "+4930901820", "DE", "fixed_line", "Europe/Berlin"),  # DE geo
        ("020 7946 0958", "81.2.69.142", "+442079460958", "GB", "fixed_line", "Europe/London"),  # GB geo
        ("+81 90-1234-5678", "", "+819012345678", "JP", "mobile", "Asia/Tokyo"),
        ("+33 6 12 34 56 78", "", "+33612345678", "FR", "mobile", "Europe/Paris"),
        ("+61 2 9374 4000", "", "+61293744000", "AU", "fixed_line", "Australia/Sydney"),
    ],
)
def test_phones(enricher, raw, ip, e164, country, line_type, tz):
    out = enricher.enrich(identify({"phone": raw}, ip=ip))
    assert out["enrich_errors"] == []
    assert (out["phone_e164"], out["phone_country"], out["phone_line_type"]) == (e164, country, line_type)
    assert out["phone_timezone"] == tz


def test_phone_carrier(enricher):
    out = enricher.enrich(identify({"phone": "+49 151 23456789"}))
    assert out["phone_carrier"] == "T-Mobile"
    out = enricher.enrich(identify({"phone": "+81 90-1234-5678"}))
    assert out["phone_carrier"] != ""


def test_national_phone_without_geo_is_an_error(enricher):
    out = enricher.enrich(identify({"phone": "030 901820"}))  # no country known: cannot parse
    assert out["phone_e164"] == ""
    assert out["enrich_errors"] and out["enrich_errors"][0].startswith("phone: ")


@pytest.mark.parametrize(
    ("traits", "first", "last"),
    [
        ({"firstName": "Ada", "lastName": "Lovelace"}, "Ada", "Lovelace"),
        ({"first_name": "Grace", "last_name": "Hopper"}, "Grace", "Hopper"),
        ({"name": "Dr. Juan Q. Xavier de la Vega III"}, "Juan", "de la Vega"),
        ({"name": "Smith, John"}, "John", "Smith"),
        ({"name": "Anne-Marie O'Neil"}, "Anne-Marie", "O'Neil"),
        ({"name": "Madonna"}, "Madonna", ""),
        ({"firstName": "Ada", "name": "Ada King Lovelace"}, "Ada", "Lovelace"),
    ],
)
def test_names(enricher, traits, first, last):
    out = enricher.enrich(identify(traits))
    assert (out["first_name"], out["last_name"]) == (first, last)


def test_form_submit_properties(enricher):
    ev = page_event(
        type="track",
        event="form_submit",
        properties={
            "form_id": "demo",
            "Email": "Lead@Contoso.com",
            "Phone Number": "+1 206 555 0100",
            "name": "Pat Doe",
        },
    )
    out = enricher.enrich(ev)
    assert (out["email"], out["company_domain"], out["company_name"]) == ("lead@contoso.com", "contoso.com", "Contoso")
    assert out["phone_e164"] == "" or out["phone_e164"] == "+12065550100"
    assert (out["first_name"], out["last_name"]) == ("Pat", "Doe")


def test_track_product_name_is_not_a_person(enricher):
    ev = page_event(type="track", event="Product Viewed", properties={"name": "Blue Shoe", "price": 10})
    out = enricher.enrich(ev)
    assert (out["first_name"], out["last_name"], out["email"]) == ("", "", "")


def test_context_traits(enricher):
    ev = page_event(type="track", event="x")
    ev["context"]["traits"] = {"email": "a.b@example.org"}
    assert enricher.enrich(ev)["email"] == "a.b@example.org"


def test_non_string_traits_ignored(enricher):
    out = enricher.enrich(identify({"email": 42, "phone": None, "name": ["x"]}))
    assert out["enrich_errors"] == [] and out["email"] == ""
