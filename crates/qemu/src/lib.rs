//! zygote-qemu
