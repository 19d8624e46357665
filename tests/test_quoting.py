"""Quote stripping on replies written by real mail clients (tests/data/replies/*.eml)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commit_email.config import ThreadingConfig
from commit_email.message import Message
from commit_email.quoting import (
    BUILTIN_RULES,
    cut_html_quote,
    rules_from_config,
    strip_quotes,
)
from commit_email.replies import reply_text

REPLIES = Path(__file__).parent / "data" / "replies"

#: file -> (the new text the customer wrote, the rule expected to cut)
EXPECTED = {
    "outlook-2016-en.eml": (
        "Hi,\n\nthe printer is still jammed after the restart. The display shows error "
        "E-532.\n\nRegards\nJane",
        "original-message separator",
    ),
    "outlook-365-de.eml": (
        "Hallo,\n\nder VPN-Zugang geht wieder, vielen Dank! Sie können das Ticket "
        "schließen.\n\nMit freundlichen Grüßen\nMax Mustermann",
        "Outlook header block",
    ),
    "outlook-fr.eml": (
        "Bonjour,\n\nC'est toujours aussi lent ce matin.\n\nCordialement,\nJulien Bernard",
        "Outlook header block",
    ),
    "outlook-es.eml": (
        "Buenos días:\n\nYa podemos acceder al servidor. Gracias.\n\nUn saludo,\nCarlos",
        "Outlook header block",
    ),
    "outlook-nl.eml": (
        "Goedemorgen,\n\nDe wifi is vannacht weer twee keer weggevallen.\n\n"
        "Met vriendelijke groet,\nSanne Bakker",
        "Outlook header block",
    ),
    "outlook-sv.eml": (
        "Hej,\n\nskrivaren fungerar nu. Tack!\n\nMed vänliga hälsningar\nErik",
        "Outlook header block",
    ),
    "gmail-en-wrapped.eml": (
        "Thanks, it works again after the restart.\n\nJane",
        "On … wrote:",
    ),
    "gmail-fr.eml": (
        "Bonjour,\n\nLe technicien est passé, tout fonctionne. Merci beaucoup !\n\nCéline",
        "Le … a écrit :",
    ),
    "gmail-es.eml": (
        'Hola,\n\nsigue sin funcionar, el error es "contraseña incorrecta".\n\nSaludos,\nLucía',
        "El … escribió:",
    ),
    "gmail-da.eml": (
        "Hej,\n\nprinteren virker nu igen. Tak for hjælpen.\n\nMvh Lars",
        "Den … skrev …:",
    ),
    "apple-mail.eml": (
        "The drive mounts now, but only read-only.\n\nTom",
        "tail '>' lines",
    ),
    "iphone-mail.eml": (
        "Works from home too now. Thanks!\n\nSent from my iPhone",
        "tail '>' lines",
    ),
    "thunderbird-en.eml": (
        "Hello,\n\nit asked again this morning, three times.\n\nAnna",
        "On … wrote:",
    ),
    "thunderbird-de.eml": (
        "Guten Tag,\n\nnach dem Tausch der Kartusche druckt er wieder. Danke!\n\nK. Weber",
        "Am … schrieb …:",
    ),
    "mutt-bottom-post.eml": (
        'The job failed again last night with "target volume full".\n'
        "I have deleted the old snapshots, please check tonight's run.\n\n-- \nFelix Wagner",
        "On … wrote:",
    ),
}

HTML_ONLY = {
    "outlook-web-html-only.eml": "The scanner still sends blank pages when I use the document "
    "feeder.",
    "gmail-nl-html-only.eml": "De laptop start nog steeds niet op, het lampje knippert oranje.",
}


def load(name: str) -> Message:
    return Message.from_bytes((REPLIES / name).read_bytes())


def test_replies_from_at_least_six_clients_are_covered() -> None:
    clients = {name.split("-")[0] for name in (*EXPECTED, *HTML_ONLY)}
    assert {"outlook", "gmail", "apple", "iphone", "thunderbird", "mutt"} <= clients
    assert sorted(p.name for p in REPLIES.glob("*.eml")) == sorted(
        [*EXPECTED, *HTML_ONLY, "thanks-no-quote.eml"]
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reply_keeps_only_the_new_text(name: str) -> None:
    new_text, rule = EXPECTED[name]

    result = reply_text(load(name), BUILTIN_RULES)

    assert result.text == new_text
    assert result.rule == rule


@pytest.mark.parametrize("name", sorted(HTML_ONLY))
def test_html_only_reply_is_stripped(name: str) -> None:
    message = load(name)
    assert message.html is not None and "<" in message.html

    result = reply_text(message, BUILTIN_RULES)

    assert result.stripped
    assert HTML_ONLY[name] in result.text
    assert "Dear Customer" not in result.text and "Beste klant" not in result.text
    assert "support@acme.example" not in result.text


def test_html_quote_container_is_the_fallback_when_the_text_has_no_marker() -> None:
    html = (
        '<div>Yes, please go ahead.</div><blockquote type="cite"><div>Shall we replace the '
        "disk?</div></blockquote>"
    )

    head = cut_html_quote(html)

    assert head == "<div>Yes, please go ahead.</div>"


def test_text_without_quotes_is_untouched_even_with_look_alike_lines() -> None:
    message = load("thanks-no-quote.eml")

    result = reply_text(message, BUILTIN_RULES)

    assert not result.stripped
    assert result.text == message.text


def test_configured_patterns_come_first_and_can_replace_the_builtins() -> None:
    text = "Done.\n\n=== reply above this line ===\nOld text\n> On Mon, 1 Jan 2024 x wrote:\n"
    config = ThreadingConfig(quote_patterns=(r"^=== reply above this line ===$",),
                             builtin_quote_patterns=False)

    result = strip_quotes(text, rules_from_config(config))

    assert result.text == "Done."
    assert result.rule == "quote_patterns[0]"


def test_builtins_can_be_switched_off() -> None:
    config = ThreadingConfig(builtin_quote_patterns=False)
    text = "Thanks\n\nOn Mon, 5 Feb 2024 at 10:00, A <a@b.example> wrote:\n> old\n"

    assert strip_quotes(text, rules_from_config(config)).text == text


def test_earliest_marker_wins_over_rule_order() -> None:
    text = (
        "New text\n\nOn Mon, 5 Feb 2024 at 10:00, A <a@b.example> wrote:\n"
        "> -----Original Message-----\n> older\n"
    )

    assert strip_quotes(text).text == "New text"


def test_a_reply_that_is_only_quote_is_kept_whole() -> None:
    text = "> just the quote\n> nothing new\n"

    result = strip_quotes(text)

    assert result.text == text
    assert not result.stripped


# Property tests ------------------------------------------------------------------------

_plain_line = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd", "Zs"),
                           whitelist_characters=".,!?'"),
    min_size=1, max_size=60,
).filter(lambda s: s.strip() != "")


@given(st.text(max_size=2000))
def test_never_raises_and_never_grows(text: str) -> None:
    result = strip_quotes(text)

    assert len(result.text) <= len(text.replace("\r\n", "\n"))
    if result.stripped:
        assert result.text.strip()


@given(
    new=st.lists(_plain_line, min_size=1, max_size=6),
    quoted=st.lists(_plain_line, min_size=1, max_size=6),
    attribution=st.sampled_from([
        "On Mon, 5 Feb 2024 at 10:12, Acme Support <support@acme.example> wrote:",
        "On Mon, Feb 5, 2024 at 10:12 AM Acme Support <\nsupport@acme.example> wrote:",
        "Am 05.02.2024 um 10:12 schrieb Acme Support <support@acme.example>:",
        "Le lun. 5 févr. 2024 à 10:12, Acme Support <support@acme.example> a écrit :",
        "Op ma 5 feb. 2024 om 10:12 schreef Acme Support <support@acme.example>:",
        "Den 5. feb. 2024 kl. 10.12 skrev Acme Support <support@acme.example>:",
        "-----Original Message-----\nFrom: Acme Support\nSent: Monday, 5 February 2024 10:12",
    ]),
)
def test_new_text_above_any_attribution_survives_exactly(
    new: list[str], quoted: list[str], attribution: str
) -> None:
    body = "\n".join(new)
    text = body + "\n\n" + attribution + "\n\n" + "\n".join("> " + q for q in quoted) + "\n"

    result = strip_quotes(text)

    assert result.text == body.rstrip()
    assert result.stripped


# Pathological input: every regex here is fed customer text, so none may backtrack
# super-linearly (each of these took 50 s to 2 min before the rules were fixed).
ADVERSARIAL = {
    "From: then a long blank run": "From:" + " " * 200_000,
    "From: then blanks and stars": "From:" + " *" * 100_000,
    "three long From lines": ("From:" + " " * 100_000 + "\n") * 3,
    "separators with trailing blanks": ("-----" + " " * 50 + "\n") * 2000 + "x",
    "separators and blank lines": ("-----" + " \t" * 30 + "\n \t \n") * 1000 + "x",
    "many On lines without a verb": ("On 1 " + "y" * 300 + "\n" + "z" * 300 + "\n") * 3000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_pathological_text_is_handled_in_linear_time(name: str) -> None:
    started = time.perf_counter()

    strip_quotes(ADVERSARIAL[name])

    assert time.perf_counter() - started < 2.0
