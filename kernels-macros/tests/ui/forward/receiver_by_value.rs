#![allow(unused_imports)]

use kernels_runtime::dispatch::{DispatchError, HostTensor};
use kernels_runtime::kernelize;
use kernels_runtime::registry::Registry;

static __KERNELS_REGISTRY: Registry = Registry { layers: &[kernels_runtime::registry::LayerEntry { layer: "RMSNorm", device: kernels_runtime::variant::BackendKind::Cuda, kernel: "kernels", function: "f", capability: None, mode: kernels_runtime::registry::ModeSupport::Inference, deterministic: false, tolerance: None }], ..Registry::EMPTY };

#[kernelize(
    layer = "RMSNorm",
    forward = fn forward(self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
    output = HostTensor::zeros(x.shape()),
    args = (output, x, self.weight, self.eps),
)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError> {
        Ok(x.clone())
    }
}

fn main() {}
