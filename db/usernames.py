"""Usernames: how they are told apart, signed in with, and kept to their account.

* **Sign-in key**: a username in Unicode NFKC, case-folded. ``Alice``, ``ALICE`` and
  ``alice`` written in full-width letters sign in as ``alice``; no two users share
  a key.
* **Look-alike key**: the sign-in key without separators (``.``, ``_``, ``-``) and
  with the characters that Unicode's confusables data (UTS #39) lists as look-alikes
  among the letters and digits a username may hold, folded together: ``0`` and ``o``;
  ``1``, ``l`` and ``i`` (a capital I is a lower-case l in many fonts); ``rn`` and
  ``m``. A name whose look-alike key is taken is refused: ``aIice``, ``al1ce`` and
  ``alice.`` cannot join an ``alice``.
* **Accounts keep their names to themselves.** A user that an account's admin makes
  (``POST /v1/users``) is named in that account: ``carol`` made in account 3 signs in
  as ``carol@3``. Only names in the same account can collide, so making a user tells
  an admin nothing about the people of other accounts. Users the operator makes (the
  command line), and every user made before names were kept to accounts, have
  service-wide names, which never end in ``@`` and digits.
"""

from __future__ import annotations

import re
import unicodedata

# Unicode's confusables among [a-z0-9] after case folding, each group to one letter.
_LOOK_ALIKES = (("rn", "m"), ("0", "o"), ("1", "l"), ("i", "l"))
_SEPARATORS = re.compile(r"[._-]")
# The ending that marks a name kept to an account: "@" and the account's id.
_IN_ACCOUNT = re.compile(r"@[0-9]+\Z")


def in_account(name: str, account_id: int) -> str:
    """The sign-in name of a user an account's admin made."""
    return f"{name}@{account_id}"


def is_account_name(username: str) -> bool:
    """Whether ``username`` has the form kept for names made in an account."""
    return _IN_ACCOUNT.search(username) is not None


def sign_in_key(username: str) -> str:
    return unicodedata.normalize("NFKC", username).casefold()


def lookalike_key(username: str) -> str:
    """The look-alike key; an account name's ``@<id>`` ending is kept as it is."""
    ending = _IN_ACCOUNT.search(username)
    local = username[: ending.start()] if ending else username
    folded = _SEPARATORS.sub("", sign_in_key(local))
    for look_alike, letter in _LOOK_ALIKES:
        folded = folded.replace(look_alike, letter)
    return folded + (ending.group() if ending else "")
