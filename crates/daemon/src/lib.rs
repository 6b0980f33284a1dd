//! zygote-daemon
