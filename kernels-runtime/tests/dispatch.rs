//! `#[kernelize]` layers dispatching to the example CPU kernels or falling back.
