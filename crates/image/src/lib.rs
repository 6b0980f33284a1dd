//! zygote-image
