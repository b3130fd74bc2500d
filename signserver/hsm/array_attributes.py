"""Setting CKA_UNWRAP_TEMPLATE, an attribute whose value is an array of attributes, which
python-pkcs11 0.10.1 cannot pack: its mapper packs every value as flat bytes, and the session
copies those bytes into the CK_ATTRIBUTE it hands the token.

An array attribute's value is a CK_ATTRIBUTE array, each element pointing at its own value. The
array's bytes may be copied like any value; the values its elements point at must stay where
they are until the call that carries them returns. :class:`ArrayAttributeMapper` keeps them for
its own lifetime, and a session keeps its mapper until it is closed: open a session with it for
the calls that set the attribute, and close it after them.

The attribute is write-only here: reading it through python-pkcs11 would hand the token
elements whose value pointers are uninitialised memory, which the token writes through.
"""

from __future__ import annotations

import ctypes
from typing import Any

from pkcs11 import Attribute

from signserver.hsm.label_text import LabelTextMapper


class _CkAttribute(ctypes.Structure):
    """CK_ATTRIBUTE as the PKCS#11 headers declare it (CK_ULONG is C's unsigned long)."""

    _fields_ = [("type", ctypes.c_ulong), ("pValue", ctypes.c_void_p), ("ulValueLen", ctypes.c_ulong)]


def _unreadable(_value: bytes) -> Any:
    raise NotImplementedError("CKA_UNWRAP_TEMPLATE is not read through python-pkcs11 (see signserver.hsm."
                              "array_attributes)")


class ArrayAttributeMapper(LabelTextMapper):
    """signserver's mapper (LabelTextMapper), able also to set CKA_UNWRAP_TEMPLATE (a dict of attributes to
    values, each packed as python-pkcs11 packs it). Use one per session, opened for the calls
    that set the attribute (``token.open(rw=True, attribute_mapper=ArrayAttributeMapper())``)."""

    def __init__(self) -> None:
        super().__init__()
        # Every buffer an element of a packed array points at: kept while this mapper lives,
        # since the token reads them only during the call that carries the array.
        self._values: list[ctypes.Array] = []
        self.register_handler(Attribute.UNWRAP_TEMPLATE, self._pack_array, _unreadable)

    def _pack_array(self, template: dict[Attribute, Any]) -> bytes:
        """The CK_ATTRIBUTE array's bytes; the values they point at are kept in :attr:`_values`.

        Raises: NotImplementedError: an attribute python-pkcs11 cannot pack.
        """
        array = (_CkAttribute * len(template))()
        for index, (attribute, value) in enumerate(template.items()):
            packed = self.pack_attribute(attribute, value)
            buffer = ctypes.create_string_buffer(packed, len(packed))
            self._values.append(buffer)
            array[index] = _CkAttribute(int(attribute), ctypes.addressof(buffer), len(packed))
        return bytes(array)
