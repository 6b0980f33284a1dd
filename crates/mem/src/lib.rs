//! zygote-mem
