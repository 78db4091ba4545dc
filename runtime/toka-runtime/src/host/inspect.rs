//! Component introspection (filled in below).
