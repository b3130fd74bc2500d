"""Labels read as text, whatever bytes another application put in them.

python-pkcs11 reads CKA_LABEL as UTF-8 and raises UnicodeDecodeError, which is not a PKCS#11
error, at a label that is not: one key of another application so labelled stopped `hsm list`,
`hsm delete` and the search for the CA's leftover keys. Every session signserver opens reads labels
through :class:`LabelTextMapper`, which shows each byte that is not UTF-8 as U+FFFD; labels are
written as UTF-8, as before (signserver's own are checked text: see keystore.check_label).
"""

from __future__ import annotations

from pkcs11 import Attribute
from pkcs11.attributes import AttributeMapper


def _label_text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


class LabelTextMapper(AttributeMapper):
    """python-pkcs11's mapper, reading a label that is not UTF-8 with U+FFFD for its bad bytes.
    Pass one to each ``token.open(..., attribute_mapper=LabelTextMapper())``."""

    def __init__(self) -> None:
        super().__init__()
        pack, _ = self.attribute_types[Attribute.LABEL]
        self.register_handler(Attribute.LABEL, pack, _label_text)
