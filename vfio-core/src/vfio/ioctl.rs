//! The raw VFIO ioctls, each wrapped in a safe function.
#![allow(unsafe_code)]
