//! A kernelized call against a direct call of the same kernel function.
fn main() {}
