"""PAdES signatures with pyHanko, the keys staying in the HSM; time-stamping; verification."""
