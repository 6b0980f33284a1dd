//! REST models (filled in below).
