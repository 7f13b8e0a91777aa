"""Phone numbers of every country: their masked form, and finding them in free text.

WeChat gives a number as ``purePhoneNumber`` (the national number) and ``countryCode``.
A mainland number is shown as WeChat itself masks one (``138****6666``), which is what
operators and receivers already know; any other as ``+CC`` and its national number with
only the last four digits left (``+1 ******0123``). Parsing is libphonenumber's
(:mod:`phonenumbers`): country codes and national numbers vary too much for patterns.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber

_MAINLAND_MOBILE = re.compile(r"1[3-9][0-9]{9}")
# WeChat's own masked form (base libraries below 1.9.1): already masked, kept as it is
_WECHAT_MASKED = re.compile(r"[0-9]{0,3}\*{4,}[0-9]{0,4}")
_NON_DIGITS = re.compile(r"[^0-9]")
_DIGIT = re.compile(r"[0-9]")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# Numbers without a country code in free text are read as the gateway's home region's:
# WeChat's users are mostly on the mainland, and China's national numbers (7 to 12
# digits) also cover the lengths of the usual foreign national numbers.
HOME_REGION = "CN"


def _hide(digits: str) -> str:
    # at least as many digits hidden as shown, so a short number does not stay readable
    shown = min(4, len(digits) // 2)
    return "*" * (len(digits) - shown) + digits[len(digits) - shown :]


def _split(pure: str, country_code: str) -> tuple[str, str]:
    """(country code, national significant number), both digits only. libphonenumber
    drops what the national number should not hold (a trunk ``0``, separators); what it
    cannot parse is kept as its digits, never as the text it came as."""
    country = _NON_DIGITS.sub("", country_code)
    digits = _NON_DIGITS.sub("", pure)
    if not country or not digits:
        return country, digits
    try:
        number = phonenumbers.parse(f"+{country}{digits}", None)
    except NumberParseException:
        return country, digits
    return str(number.country_code), phonenumbers.national_significant_number(number)


def _mask(pure: str, country_code: str) -> tuple[str, str]:
    """(country code, masked national number)."""
    if "*" in pure and _WECHAT_MASKED.fullmatch(pure):
        return _NON_DIGITS.sub("", country_code), pure
    if country_code == "86" and _MAINLAND_MOBILE.fullmatch(pure):
        # WeChat's usual answer: libphonenumber would give these digits back as they are
        # (tests/test_phone_masking.py checks it for every prefix); its parse costs about
        # 25 µs, this 1 µs
        return country_code, f"{pure[:3]}****{pure[-4:]}"
    country, national = _split(pure, country_code)
    if country == "86" and _MAINLAND_MOBILE.fullmatch(national):
        return country, f"{national[:3]}****{national[-4:]}"
    return country, _hide(national)


def masked_national(pure: str, country_code: str) -> str:
    """The masked national number alone: ``138****6666``, ``******0123``."""
    return _mask(pure, country_code)[1]


def masked_phone(pure: str, country_code: str) -> str:
    """How a number (``purePhoneNumber``, ``countryCode``) is shown where the full number
    must not be: ``138****6666`` for the mainland, ``+1 ******0123`` for the rest."""
    country, national = _mask(pure, country_code)
    return national if country in ("86", "") else f"+{country} {national}"


def parse_e164(text: str) -> PhoneNumber | None:
    """The number written exactly in E.164 (``+12025550123``) if libphonenumber holds it
    valid, else None."""
    if not _E164.fullmatch(text):
        return None
    try:
        number = phonenumbers.parse(text, None)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    if phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) != text:
        return None
    return number


# --- free text (log redaction) ----------------------------------------------------------

# Necessary for every candidate below, and cheap: 7 digits (at most two of ' ', '-', '('
# and ')' between two of them) at the start or after a character that is no letter or
# digit (or a 'B', for '%2B'), or a mainland mobile anywhere. Most log values fail it,
# hex ids and appids included; only those that pass meet the full pattern, and only its
# candidates libphonenumber. It has no lookbehind: one at every position made it cost
# twice as much on the values every line has (request ids).
_PREFILTER_AT_START = re.compile(r"[0-9(](?:[ ()-]{0,2}[0-9]){6}")
_PREFILTER = re.compile(r"[^0-9AC-Zac-z][0-9(](?:[ ()-]{0,2}[0-9]){6}|1[3-9][0-9]{9}")
_CANDIDATE = re.compile(
    # A mainland mobile, with +86 or 86 before it, bounded by digits only, as before this
    # module existed: "id13812345678" still counts.
    r"(?<![0-9])(?P<cn_prefix>(?:\+|%2[Bb])?86[- ]?)?(?P<cn>1[3-9][0-9](?:[- ]?[0-9]{4}){2})(?![0-9])"
    # A number with its country code ('+', or '%2B' in a URL). A letter may come before:
    # the '+' is boundary enough.
    r"|(?<![0-9+])(?P<intl>(?:\+|%2[Bb])[0-9](?:(?:[ -]?\(|\) ?|[ -])?[0-9]){6,18})(?![0-9A-Za-z])"
    # A national number: a run of digits, or groups of 3 or more ("202-555-0123",
    # "(20) 7946 0958"), 7 digits at least. A letter next to it makes it part of a hex id,
    # an appid or a token; a '.', ':' or '-' between it and another digit, part of a
    # decimal, a version, an address, a time or a date, whose 2-digit groups never match.
    r"|(?<![0-9A-Za-z+])(?<![0-9][.:-])(?=[0-9(](?:[ ()-]{0,2}[0-9]){6})"
    r"(?P<national>(?:\([0-9]{2,5}\) ?|[0-9]{2,5}[ -])?(?:[0-9]{3,}[ -])*[0-9]{3,})"
    r"(?![0-9A-Za-z])(?![.:-][0-9])"
)
_GROUP_END = re.compile(r"[0-9](?![0-9])")


def _hide_in_place(text: str) -> str:
    """The digits hidden as :func:`_hide` hides them, separators left where they are."""
    digits = _NON_DIGITS.sub("", text)
    hidden = len(digits) - min(4, len(digits) // 2)
    return _DIGIT.sub("*", text, count=hidden)


def _mask_intl(text: str) -> str:
    plus = 3 if text[0] == "%" else 1
    # '+1 202 555 0123 2024': the whole is too long, its first four groups are the number;
    # so groups are dropped from the end until libphonenumber accepts what is left.
    ends = [m.end() for m in _GROUP_END.finditer(text)]
    for end in reversed(ends):
        digits = _NON_DIGITS.sub("", text[plus:end])
        if len(digits) < 7:
            break
        try:
            number = phonenumbers.parse("+" + digits, None)
        except NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            national = phonenumbers.national_significant_number(number)
            return f"+{number.country_code} {_hide(national)}{text[end:]}"
    # no country code after all ('+0 13812345678'): the digits may still hold a number
    return text[:plus] + mask_phones_in_text(text[plus:])


def _mask_match(match: re.Match[str]) -> str:
    cn = match.group("cn")
    if cn is not None:
        prefix = match.group("cn_prefix") or ""
        return f"{prefix}{cn[:3]}{_DIGIT.sub('*', cn[3:-4])}{cn[-4:]}"
    intl = match.group("intl")
    if intl is not None:
        return _mask_intl(intl)
    national = match.group("national")
    digits = _NON_DIGITS.sub("", national)
    try:
        possible = len(digits) >= 7 and phonenumbers.is_possible_number(phonenumbers.parse(digits, HOME_REGION))
    except NumberParseException:
        possible = False
    return _hide_in_place(national) if possible else national


def mask_phones_in_text(text: str) -> str:
    """``text`` with every phone number in it masked: each run of 7 or more digits (with
    an optional ``+`` and country code, and spaces, hyphens or an area code's
    parentheses between digits) that libphonenumber accepts as a possible number."""
    if len(text) < 7 or (_PREFILTER_AT_START.match(text) is None and _PREFILTER.search(text) is None):
        return text
    return _CANDIDATE.sub(_mask_match, text)
