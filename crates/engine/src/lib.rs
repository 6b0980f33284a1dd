//! zygote-engine
