#![allow(unused_imports)]

use kernels_runtime::dispatch::{DispatchError, HostTensor};
use kernels_runtime::kernelize;
use kernels_runtime::registry::Registry;

static __KERNELS_REGISTRY: Registry = Registry::EMPTY;

#[kernelize(layer)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

fn main() {}
