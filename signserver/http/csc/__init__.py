"""The Cloud Signature Consortium API (v2, and the v1 paths pyHanko's CSCSigner uses) over HTTPS."""
