"""lurm_lite: a notebook kit that reimplements LURM (KDD'23).

Bag-of-Interests (§2.1) turns any number of behaviours into sparse per-period features
b_t; SMEN (§2.2) compresses their sequence into M anchor representations of size H.
"""

__version__ = "0.1.0"
