"""ID normalisation that every party applies, identically, before PSI hashes its IDs.

PSI matches IDs byte for byte (after UTF-8 encoding), so ``"Alice@Example.com "`` and
``"alice@example.com"`` do not match unless both parties first map them to one canonical form.
A :class:`Normaliser` is an ordered pipeline of steps; :func:`parse_normaliser` builds one from a
comma-separated spec such as ``"nfkc,casefold,strip"`` (the CLI's ``--normalise`` option), and
:meth:`Normaliser.describe` / :meth:`Normaliser.fingerprint` give a canonical spec and its hash
that the parties compare before running PSI.

Steps
-----
=======================  ==========================================================================
``nfkc``                 Unicode NFKC (:func:`unicodedata.normalize`): ligature ``"ﬁ"`` -> ``"fi"``,
                         full-width ``"\\uff11"`` -> ``"1"``, no-break space -> space.
``casefold``             :meth:`str.casefold`: ``"Straße"`` -> ``"strasse"``.
``collapse_whitespace``  Every run of whitespace (:meth:`str.isspace`, so Unicode spaces too)
                         becomes one ``" "``. The ends are left to ``strip``.
``strip``                Remove surrounding whitespace (:meth:`str.isspace`: ASCII, no-break and
                         other Unicode spaces, line separators) and the invisible U+200B ZERO
                         WIDTH SPACE, U+2060 WORD JOINER and U+FEFF BYTE ORDER MARK (a BOM often
                         sticks to the first ID of a CSV file).
``email``                :class:`EmailAddress`: trim, lower-case, check the shape; option
                         ``gmail`` (``"email:gmail"``) also applies Gmail's dot and ``+tag`` rules.
``phone``                :class:`PhoneNumber`: keep the digits and a leading ``+``; options
                         ``default_country_code=+44``, ``min_digits=7``, ``max_digits=15``.
=======================  ==========================================================================

User functions join the pipeline as :class:`CustomStep` (a module-level function, a name and a
version label).

Order
-----
Steps run left to right and the order changes the result. Recommended:

- names and other free text: ``nfkc,casefold,nfkc,collapse_whitespace,strip``;
- e-mail addresses: ``nfkc,email,nfkc`` (``email:gmail`` for the Gmail rules);
- phone numbers: ``nfkc,phone`` (with ``phone:default_country_code=...`` if known).

Why:

- ``nfkc`` before ``casefold``: NFKC can produce capitals (``"㎒"`` -> ``"MHz"``), so
  ``casefold,nfkc`` leaves them.
- ``nfkc`` before ``strip`` and ``collapse_whitespace``: NFKC can produce spaces
  (``"\\u00a0"`` -> ``" "``, ``"‾"`` -> ``" \\u0305"``).
- A second ``nfkc`` after ``casefold`` or ``email``: changing case can leave a string that is
  not in NFKC (``"İ\\u0331"`` lower-cases to ``"i\\u0307\\u0331"``, whose marks NFKC puts in
  the other order), which is why Unicode defines compatibility caseless matching as
  normalise-fold-normalise.

Idempotence
-----------
Normalising an already normalised ID must not change it, or a party that stores normalised IDs
would stop matching one that stores raw IDs. Each built-in step is idempotent on its own (for
``email`` and ``phone``: on every ID they accept), and so are the recommended orders above
(checked with property-based tests). Not every order is: ``casefold,nfkc`` (``"㎒"``),
``strip,nfkc`` (``"‾"``), ``nfkc,casefold`` and ``nfkc,email`` (``"İ\\u0331"``) are not.
A :class:`CustomStep` is as idempotent as its function.

Canonical spec and fingerprint
------------------------------
Grammar: ``spec = "" | step ("," step)*``; ``step = name (":" option)*``;
``option = key "=" value | flag``. Spaces around steps are ignored by :func:`parse_normaliser`.
:meth:`Normaliser.describe` writes options in a fixed order and leaves out defaults, so equal
pipelines give equal strings, e.g. ``"nfkc,email:gmail,phone:default_country_code=+44"``. A
custom step reads ``name:function=module.qualname:version=label``.
:meth:`Normaliser.fingerprint` is ``SHA-256(b"vfl-he/psi/normaliser/v1\\n" || utf8(describe()))``.

``nfkc`` and ``casefold`` follow the Unicode version of the running Python
(:data:`unicodedata.unidata_version`); Unicode's stability policies keep both fixed for assigned
characters, so parties on different Python versions can differ only on code points that the
older version does not assign. The fingerprint does not include the Unicode version.

Security
--------
Normalisation is local: nothing here is sent, except a fingerprint or spec the caller chooses to
send, which reveals the steps and not the IDs. Error messages name the row index (0-based
position in the input) and the step, never an ID or part of one. Normalising can merge distinct
raw IDs into one; :func:`psi.align` then rejects the duplicates.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from protocols.errors import DataError, ParameterError

__all__ = [
    "BUILTIN_STEPS",
    "NFKC",
    "CaseFold",
    "CollapseWhitespace",
    "CustomStep",
    "EmailAddress",
    "Normaliser",
    "PhoneNumber",
    "Step",
    "Strip",
    "parse_normaliser",
]

#: Characters for which :meth:`str.isspace` is true (Unicode White_Space plus the ASCII
#: information separators U+001C..U+001F); a test checks this against the running Python.
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
#: Invisible characters that are not whitespace but turn up around IDs copied from documents
#: or CSV files: ZERO WIDTH SPACE, WORD JOINER, BYTE ORDER MARK (ZERO WIDTH NO-BREAK SPACE).
_INVISIBLE = "\u200b\u2060\ufeff"
_STRIP_CHARS = _WHITESPACE + _INVISIBLE
_WHITESPACE_RUN = re.compile(r"\s+")

_FINGERPRINT_TAG = b"vfl-he/psi/normaliser/v1\n"
_CUSTOM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VERSION_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_COUNTRY_CODE = re.compile(r"\+[1-9][0-9]{0,2}")
_ASCII_INT = re.compile(r"[0-9]{1,4}")

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_MAX_LOCAL_PART = 64  # RFC 5321, section 4.5.3.1.1
_MAX_ADDRESS = 254  # RFC 5321 path limit (256) minus the angle brackets
_MAX_LABEL = 63  # RFC 1035

_PLUS_SIGNS = "+\uff0b"  # '+' and FULLWIDTH PLUS SIGN
_PHONE_SEPARATORS = frozenset("-./()")
_TRUNK_ZERO = re.compile(r"\(\s*0\s*\)")  # "+44 (0)20 ...": the national trunk prefix


def _where(index: int | None) -> str:
    return "the ID" if index is None else f"row {index}"


def _check_str(value: object, index: int | None) -> str:
    if not isinstance(value, str):
        raise DataError(f"{_where(index)}: expected an ID of type str, got {type(value).__name__}")
    return value


class Step(ABC):
    """One step of a :class:`Normaliser`: a pure ``str -> str`` function with a canonical spec.

    Subclasses are frozen dataclasses, so steps compare by value, hash, and pickle.
    """

    @abstractmethod
    def __call__(self, value: str, index: int | None = None) -> str:
        """Normalise one ID.

        Parameters
        ----------
        value : str
            The ID.
        index : int, optional
            Its row index, used only in error messages.

        Returns
        -------
        str
            The normalised ID.

        Raises
        ------
        DataError
            The step cannot normalise this ID. The message names ``index``, never the value.
        """

    @abstractmethod
    def describe(self) -> str:
        """Return this step's canonical spec token, e.g. ``"email:gmail"``."""


class _BuiltinStep(Step):
    """A built-in step: named in specs by :attr:`step_name`."""

    step_name: ClassVar[str]

    @classmethod
    def _from_options(cls, options: Mapping[str, str | None]) -> _BuiltinStep:
        if options:
            raise ParameterError(f"normalisation step {cls.step_name!r} takes no options")
        return cls()

    def describe(self) -> str:
        return self.step_name


@dataclass(frozen=True)
class Strip(_BuiltinStep):
    """Remove surrounding whitespace (Unicode spaces too) and zero-width spaces and BOMs.

    Examples
    --------
    >>> Strip()("\\ufeff\\u00a0 id-7\\u3000\\n")
    'id-7'
    """

    step_name: ClassVar[str] = "strip"

    def __call__(self, value: str, index: int | None = None) -> str:
        return _check_str(value, index).strip(_STRIP_CHARS)


@dataclass(frozen=True)
class CaseFold(_BuiltinStep):
    """Apply :meth:`str.casefold` (full Unicode case folding, stronger than ``lower``).

    Examples
    --------
    >>> CaseFold()("Straße")
    'strasse'
    """

    step_name: ClassVar[str] = "casefold"

    def __call__(self, value: str, index: int | None = None) -> str:
        return _check_str(value, index).casefold()


@dataclass(frozen=True)
class NFKC(_BuiltinStep):
    """Apply Unicode normalisation form NFKC (compatibility decomposition, then composition).

    Examples
    --------
    >>> NFKC()("ﬁle-\\uff11\\uff12")
    'file-12'
    """

    step_name: ClassVar[str] = "nfkc"

    def __call__(self, value: str, index: int | None = None) -> str:
        return unicodedata.normalize("NFKC", _check_str(value, index))


@dataclass(frozen=True)
class CollapseWhitespace(_BuiltinStep):
    """Replace every run of whitespace (as :meth:`str.isspace`) with one ASCII space.

    The ends are kept (as one space each); use :class:`Strip` to remove them.

    Examples
    --------
    >>> CollapseWhitespace()("Ada\\u00a0 \\tLovelace")
    'Ada Lovelace'
    """

    step_name: ClassVar[str] = "collapse_whitespace"

    def __call__(self, value: str, index: int | None = None) -> str:
        return _WHITESPACE_RUN.sub(" ", _check_str(value, index))


@dataclass(frozen=True)
class EmailAddress(_BuiltinStep):
    """Canonicalise an e-mail address: trim, lower-case, check that it is address-shaped.

    The whole address is lower-cased. RFC 5321 lets the receiving server treat the local part
    (before ``@``) as case-sensitive, so this can in principle merge two mailboxes, but the big
    providers treat it case-insensitively and people type it in any case: matching more of the
    same people is worth more here. :meth:`str.lower` is used, not ``casefold``: ``"ß"`` stays.

    Address-shaped means: no whitespace, control characters, or the zero-width characters
    that :class:`Strip` removes, inside; exactly one ``@``
    (so quoted local parts containing ``@`` are rejected); a non-empty local part of at most 64
    characters; a domain of at least two dot-separated labels, each 1 to 63 characters and not
    starting or ending with ``-``; at most 254 characters in all. One trailing dot of the domain
    (``example.com.``) is removed. Internationalised domains are not converted between Unicode
    and punycode; run ``nfkc`` first so that equivalent Unicode spellings agree.

    Parameters
    ----------
    gmail : bool, default False
        For ``gmail.com`` and ``googlemail.com`` only, also drop the ``+tag`` and the dots of the
        local part, and write the domain as ``gmail.com`` (Gmail delivers all of them to one
        mailbox). Spec: ``"email:gmail"``.

    Raises
    ------
    ParameterError
        ``gmail`` is not a bool.

    Examples
    --------
    >>> EmailAddress()("  Ada.Lovelace+news@Example.ORG ")
    'ada.lovelace+news@example.org'
    >>> EmailAddress(gmail=True)("Ada.Lovelace+news@GoogleMail.com")
    'adalovelace@gmail.com'
    """

    step_name: ClassVar[str] = "email"
    gmail: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.gmail, bool):
            raise ParameterError(f"gmail must be a bool, got {type(self.gmail).__name__}")

    @classmethod
    def _from_options(cls, options: Mapping[str, str | None]) -> _BuiltinStep:
        _check_options(cls.step_name, options, ("gmail",))
        if "gmail" in options and options["gmail"] is not None:
            raise ParameterError("option 'gmail' of step 'email' is a flag and takes no value")
        return cls(gmail="gmail" in options)

    def describe(self) -> str:
        return f"{self.step_name}:gmail" if self.gmail else self.step_name

    def __call__(self, value: str, index: int | None = None) -> str:
        where = _where(index)
        address = _check_str(value, index).strip(_STRIP_CHARS)
        if address.count("@") != 1 or any(
            ch.isspace() or ch in _INVISIBLE or unicodedata.category(ch) == "Cc" for ch in address
        ):
            raise DataError(
                f"{where}: not an e-mail address (expected local@domain: exactly one '@', "
                "no whitespace, zero-width or control characters)"
            )
        local, domain = address.lower().split("@")
        if domain.endswith("."):
            domain = domain[:-1]
        labels = domain.split(".")
        if len(labels) < 2 or any(
            not label or len(label) > _MAX_LABEL or label[0] == "-" or label[-1] == "-"
            for label in labels
        ):
            raise DataError(
                f"{where}: not an e-mail address (expected a domain of dot-separated labels "
                "like example.org)"
            )
        if self.gmail and domain in _GMAIL_DOMAINS:
            local = local.split("+", 1)[0].replace(".", "")
            domain = "gmail.com"
        if not local or len(local) > _MAX_LOCAL_PART:
            raise DataError(
                f"{where}: not an e-mail address (expected a local part of 1 to "
                f"{_MAX_LOCAL_PART} characters)"
            )
        canonical = f"{local}@{domain}"
        if len(canonical) > _MAX_ADDRESS:
            raise DataError(
                f"{where}: not an e-mail address (longer than {_MAX_ADDRESS} characters)"
            )
        return canonical


@dataclass(frozen=True)
class PhoneNumber(_BuiltinStep):
    """Canonicalise a phone number to its digits, with ``+`` when the country code is known.

    Rules, in order:

    1. Trim as :class:`Strip`. A leading ``+`` (or U+FF0B FULLWIDTH PLUS SIGN) marks an
       international number; after it, a ``(0)`` (the trunk prefix in ``+44 (0)20 ...``) is
       dropped.
    2. Keep the decimal digits (any script's, written as ASCII: ``"\\uff10"`` -> ``"0"``);
       drop whitespace, ``- . / ( )`` and Unicode dashes. Anything else, letters included, is
       rejected: ``"555 1234 ext 5"`` must not silently become ``"55512345"``.
    3. A leading ``00`` (the international call prefix of most countries) becomes ``+``.
    4. With ``default_country_code``, a national number (no ``+``, one leading ``0``) becomes
       ``default_country_code`` followed by the digits after the ``0``:
       ``"020 7946 0958"`` -> ``"+442079460958"`` for ``"+44"``.
    5. Check the number of digits (not counting ``+``) and that a country code does not start
       with ``0``.

    Numbers with neither ``+`` nor a trunk ``0`` are kept as bare digits: ``"442079460958"``
    could already include a country code, and this step does not guess, so it does not match
    ``"+442079460958"``. Numbering plans without a trunk ``0`` (e.g. North America's ``1``) are
    not converted.

    Parameters
    ----------
    default_country_code : str, optional
        ``"+"`` and 1 to 3 digits, not starting with 0, e.g. ``"+44"``. Spec:
        ``"phone:default_country_code=+44"``.
    min_digits, max_digits : int, default 7 and 15
        Accepted number of digits, inclusive. 15 is the E.164 maximum. Spec:
        ``"phone:min_digits=8:max_digits=12"``.

    Raises
    ------
    ParameterError
        A malformed ``default_country_code`` or digit bounds that are not integers with
        ``1 <= min_digits <= max_digits``.

    Examples
    --------
    >>> PhoneNumber()("+44 (0)20 7946-0958")
    '+442079460958'
    >>> PhoneNumber(default_country_code="+44")("020 7946 0958")
    '+442079460958'
    >>> PhoneNumber()("0044 20 7946 0958")
    '+442079460958'
    """

    step_name: ClassVar[str] = "phone"
    default_country_code: str | None = None
    min_digits: int = 7
    max_digits: int = 15

    def __post_init__(self) -> None:
        code = self.default_country_code
        if code is not None and not (isinstance(code, str) and _COUNTRY_CODE.fullmatch(code)):
            raise ParameterError(
                "default_country_code must be '+' and 1 to 3 digits not starting with 0, "
                f"e.g. '+44'; got {code!r}"
            )
        for name in ("min_digits", "max_digits"):
            bound = getattr(self, name)
            if not isinstance(bound, int) or isinstance(bound, bool):
                raise ParameterError(f"{name} must be an int, got {type(bound).__name__}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ParameterError(
                "expected 1 <= min_digits <= max_digits, got "
                f"min_digits={self.min_digits}, max_digits={self.max_digits}"
            )

    @classmethod
    def _from_options(cls, options: Mapping[str, str | None]) -> _BuiltinStep:
        _check_options(cls.step_name, options, ("default_country_code", "min_digits", "max_digits"))
        kwargs: dict[str, Any] = {}
        for key, raw in options.items():
            if raw is None:
                raise ParameterError(f"option {key!r} of step 'phone' needs a value ({key}=...)")
            if key == "default_country_code":
                kwargs[key] = raw
            elif _ASCII_INT.fullmatch(raw):
                kwargs[key] = int(raw)
            else:
                raise ParameterError(f"option {key!r} of step 'phone' must be an integer")
        return cls(**kwargs)

    def describe(self) -> str:
        parts = [self.step_name]
        if self.default_country_code is not None:
            parts.append(f"default_country_code={self.default_country_code}")
        if self.min_digits != 7:
            parts.append(f"min_digits={self.min_digits}")
        if self.max_digits != 15:
            parts.append(f"max_digits={self.max_digits}")
        return ":".join(parts)

    def __call__(self, value: str, index: int | None = None) -> str:
        where = _where(index)
        number = _check_str(value, index).strip(_STRIP_CHARS)
        international = bool(number) and number[0] in _PLUS_SIGNS
        if international:
            number = _TRUNK_ZERO.sub("", number[1:], count=1)
        digits = []
        for ch in number:
            if ch.isdecimal():
                digits.append(str(unicodedata.decimal(ch)))
            elif not (ch.isspace() or ch in _PHONE_SEPARATORS or unicodedata.category(ch) == "Pd"):
                raise DataError(
                    f"{where}: not a phone number (expected digits, one leading '+' and "
                    "separators such as spaces, '-', '.', '/', parentheses)"
                )
        national = "".join(digits)
        if not international and national.startswith("00"):
            international, national = True, national[2:]
        if not international and self.default_country_code and national.startswith("0"):
            international = True
            national = self.default_country_code[1:] + national[1:]
        if international and national.startswith("0"):
            raise DataError(f"{where}: not a phone number (a country code cannot start with 0)")
        if len(national) < self.min_digits:
            raise DataError(
                f"{where}: too few digits for a phone number (expected at least {self.min_digits})"
            )
        if len(national) > self.max_digits:
            raise DataError(
                f"{where}: too many digits for a phone number (expected at most {self.max_digits})"
            )
        return "+" + national if international else national


def _qualified_name(function: object) -> str:
    """``module.qualname`` of a function that pickle can find by that name, or raise."""
    qualname = getattr(function, "__qualname__", None)
    module = getattr(function, "__module__", None)
    if module is None:  # method descriptors such as str.upper
        module = getattr(getattr(function, "__objclass__", None), "__module__", None)
    if not isinstance(qualname, str) or not isinstance(module, str) or "<" in qualname:
        raise ParameterError(
            "a custom normalisation function must be defined at module level (no lambda, "
            "nested function, partial or callable instance) so that it pickles by name, "
            f"got {type(function).__name__}"
        )
    try:
        found: object = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        found = None
    if found is not function:
        raise ParameterError(
            f"custom normalisation function {module}.{qualname} cannot be found under its own "
            "name; define it at module level"
        )
    return f"{module}.{qualname}"


@dataclass(frozen=True)
class CustomStep(Step):
    """A user-provided normalisation function as a pipeline step.

    Parameters
    ----------
    name : str
        Name of the step in specs: a letter or ``_``, then letters, digits or ``_``; not the
        name of a built-in step.
    function : callable
        ``str -> str``, defined at module level (importable as ``module.qualname``, so it
        pickles by reference and worker processes can run it). Lambdas, nested functions,
        ``functools.partial`` objects and callable instances are rejected.
    version : str
        A label the user changes whenever the function's behaviour changes (letters, digits,
        ``. _ + -``). The fingerprint covers the function's qualified name and this label, not
        its code: both parties must run the same code under the same label.

    Raises
    ------
    ParameterError
        A bad name, version label or function.

    Security
    --------
    If the function raises, the step raises :class:`~protocols.errors.DataError` naming the
    row and the exception type only, and suppresses the original exception (its message may
    contain the ID). Debug the function on its own.

    Examples
    --------
    >>> step = CustomStep("upper", str.upper, version="1")
    >>> step.describe()
    'upper:function=builtins.str.upper:version=1'
    >>> step("ab-1")
    'AB-1'
    """

    name: str
    function: Callable[[str], str]
    version: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _CUSTOM_NAME.fullmatch(self.name):
            raise ParameterError(
                "a custom step name must be a letter or '_' followed by letters, digits or "
                f"'_', got {self.name!r}"
            )
        if self.name in _BUILTINS:
            raise ParameterError(f"custom step name {self.name!r} is the name of a built-in step")
        if not isinstance(self.version, str) or not _VERSION_LABEL.fullmatch(self.version):
            raise ParameterError(
                f"custom step {self.name!r} needs a version label of letters, digits and "
                f"'._+-' (e.g. '1' or '2024.1'), got {self.version!r}"
            )
        _qualified_name(self.function)

    def describe(self) -> str:
        return f"{self.name}:function={_qualified_name(self.function)}:version={self.version}"

    def __call__(self, value: str, index: int | None = None) -> str:
        where = _where(index)
        value = _check_str(value, index)
        try:
            result = self.function(value)
        except Exception as exc:
            # The original message may quote the ID, so it is not chained.
            raise DataError(
                f"{where}: custom step {self.name!r} raised {type(exc).__name__}"
            ) from None
        if not isinstance(result, str):
            raise DataError(
                f"{where}: custom step {self.name!r} returned {type(result).__name__}, expected str"
            )
        return result


_BUILTINS: dict[str, type[_BuiltinStep]] = {
    cls.step_name: cls
    for cls in (Strip, CaseFold, NFKC, CollapseWhitespace, EmailAddress, PhoneNumber)
}

#: Names of the built-in steps, as written in specs.
BUILTIN_STEPS: tuple[str, ...] = tuple(sorted(_BUILTINS))


def _check_options(step: str, options: Mapping[str, str | None], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ParameterError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for step {step!r}; "
            f"valid: {', '.join(allowed)}"
        )


@dataclass(frozen=True)
class Normaliser:
    """An ordered pipeline of normalisation steps, applied left to right.

    Frozen, comparable, hashable and picklable (to send it to worker processes). Build one
    from a spec with :func:`parse_normaliser`, or from steps.

    Parameters
    ----------
    steps : sequence of Step, default ()
        The steps in order. No steps: the identity (still checks that IDs are ``str``).

    Raises
    ------
    ParameterError
        An element of ``steps`` is not a :class:`Step`.

    Examples
    --------
    >>> normaliser = Normaliser((NFKC(), CaseFold(), Strip()))
    >>> normaliser.describe()
    'nfkc,casefold,strip'
    >>> normaliser.apply(["ﬁsh\\u00a0", " FISH", "Straße"])
    ['fish', 'fish', 'strasse']
    """

    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.steps, (str, Step)) or not isinstance(self.steps, Iterable):
            raise ParameterError(
                f"steps must be a sequence of Step objects, got {type(self.steps).__name__}"
            )
        steps = tuple(self.steps)
        for position, step in enumerate(steps):
            if not isinstance(step, Step):
                raise ParameterError(f"steps[{position}] must be a Step, got {type(step).__name__}")
        object.__setattr__(self, "steps", steps)

    def __call__(self, value: str) -> str:
        """Normalise one ID.

        Parameters
        ----------
        value : str
            The ID.

        Returns
        -------
        str
            The ID after every step.

        Raises
        ------
        DataError
            ``value`` is not a ``str``, or a step rejects it. The message never contains it.
        """
        return self._normalise(value, None)

    def apply(self, ids: Iterable[str]) -> list[str]:
        """Normalise every ID, in order.

        Parameters
        ----------
        ids : iterable of str
            The IDs, e.g. a list or a pandas ``Series`` of strings.

        Returns
        -------
        list of str
            The normalised IDs, one per input, in input order. Distinct inputs can give equal
            outputs.

        Raises
        ------
        ParameterError
            ``ids`` is a single ``str`` (which would be normalised character by character).
        DataError
            An ID is not a ``str`` or a step rejects it. The message names the first such row
            (0-based position in ``ids``), never the value.
        """
        if isinstance(ids, (str, bytes)):
            raise ParameterError(
                f"ids must be an iterable of str, not a single {type(ids).__name__}"
            )
        return [self._normalise(value, index) for index, value in enumerate(ids)]

    def _normalise(self, value: str, index: int | None) -> str:
        value = _check_str(value, index)
        for step in self.steps:
            value = step(value, index)
        return value

    def describe(self) -> str:
        """Return the canonical spec, e.g. ``"nfkc,casefold,strip"``; ``""`` for the identity.

        :func:`parse_normaliser` reads it back (given the same ``custom`` functions), and equal
        pipelines give equal strings.
        """
        return ",".join(step.describe() for step in self.steps)

    def fingerprint(self) -> bytes:
        """Return ``SHA-256(b"vfl-he/psi/normaliser/v1\\n" || utf8(describe()))``, 32 bytes.

        Parties exchange or compare fingerprints to check they normalise the same way before
        running PSI. A custom step contributes its name, qualified function name and version
        label, not its code.

        Security
        --------
        Reveals the pipeline, not the IDs: it is a hash of public configuration.
        """
        return hashlib.sha256(_FINGERPRINT_TAG + self.describe().encode("utf-8")).digest()


def _parse_token(token: str) -> tuple[str, dict[str, str | None]]:
    name, *raw_options = token.split(":")
    options: dict[str, str | None] = {}
    for raw in raw_options:
        key, sep, val = raw.partition("=")
        key = key.strip()
        if not key:
            raise ParameterError(f"empty option name in normalisation step {name.strip()!r}")
        if key in options:
            raise ParameterError(f"option {key!r} given twice in step {name.strip()!r}")
        options[key] = val.strip() if sep else None
    return name.strip(), options


def parse_normaliser(
    spec: str, *, custom: Mapping[str, Callable[[str], str]] | None = None
) -> Normaliser:
    """Build a :class:`Normaliser` from a comma-separated spec such as ``"nfkc,casefold,strip"``.

    Parameters
    ----------
    spec : str
        Steps in order, separated by commas; each step ``name`` or ``name:key=value:flag``
        (see the module docstring for the grammar and :data:`BUILTIN_STEPS`). Spaces around
        steps are ignored. An empty or blank spec gives the identity.
        :meth:`Normaliser.describe` output is a valid spec.
    custom : mapping of str to callable, optional
        User functions by step name (module-level functions; see :class:`CustomStep`). A custom
        step in ``spec`` must carry its version label, ``name:version=label``; it may also say
        ``function=module.qualname``, which must then name the mapped function.

    Returns
    -------
    Normaliser

    Raises
    ------
    ParameterError
        ``spec`` is not a ``str``; an empty step (``"strip,,nfkc"``); an unknown step (the
        message lists the valid names); unknown, repeated or malformed options; a custom step
        without a version or whose ``function=`` differs; a ``custom`` name that is not valid
        or is a built-in name; a custom function that is not module-level.

    Examples
    --------
    >>> parse_normaliser("nfkc, casefold, strip").describe()
    'nfkc,casefold,strip'
    >>> parse_normaliser("email:gmail,phone:default_country_code=+44").describe()
    'email:gmail,phone:default_country_code=+44'
    >>> parse_normaliser("strip,upper:version=2", custom={"upper": str.upper})("  ab ")
    'AB'
    """
    if not isinstance(spec, str):
        raise ParameterError(f"spec must be a str, got {type(spec).__name__}")
    functions = dict(custom or {})
    for name in functions:
        if not isinstance(name, str) or not _CUSTOM_NAME.fullmatch(name):
            raise ParameterError(
                "a custom step name must be a letter or '_' followed by letters, digits or "
                f"'_', got {name!r}"
            )
        if name in _BUILTINS:
            raise ParameterError(f"custom step name {name!r} is the name of a built-in step")
    if not spec.strip():
        return Normaliser()
    steps: list[Step] = []
    for position, token in enumerate(spec.split(",")):
        if not token.strip():
            raise ParameterError(f"empty step at position {position} of the normalisation spec")
        name, options = _parse_token(token)
        if name in _BUILTINS:
            steps.append(_BUILTINS[name]._from_options(options))
        elif name in functions:
            steps.append(_custom_step(name, functions[name], options))
        else:
            valid = ", ".join(BUILTIN_STEPS)
            if functions:
                valid += "; custom: " + ", ".join(sorted(functions))
            raise ParameterError(f"unknown normalisation step {name!r}; valid steps: {valid}")
    return Normaliser(tuple(steps))


def _custom_step(
    name: str, function: Callable[[str], str], options: Mapping[str, str | None]
) -> CustomStep:
    _check_options(name, options, ("function", "version"))
    version = options.get("version")
    if version is None:
        raise ParameterError(
            f"custom step {name!r} needs a version label in the spec, e.g. '{name}:version=1'"
        )
    step = CustomStep(name, function, version)
    if "function" in options and options["function"] != _qualified_name(function):
        raise ParameterError(
            f"custom step {name!r}: the spec names function {options['function']!r} but "
            f"{_qualified_name(function)!r} was given"
        )
    return step
