#![allow(unused_imports)]

use kernels_runtime::dispatch::{DispatchError, HostTensor};
use kernels_runtime::kernelize;
use kernels_runtime::registry::Registry;

static __KERNELS_REGISTRY: Registry = Registry { layers: &[kernels_runtime::registry::LayerEntry { layer: "Split", device: kernels_runtime::variant::BackendKind::Cuda, kernel: "kernels", function: "f", capability: None, mode: kernels_runtime::registry::ModeSupport::Inference, deterministic: false, tolerance: None }], ..Registry::EMPTY };

/// A generic enum layer with two outputs, a computed argument, a forward named otherwise,
/// and a visibility that the generated method copies.
#[kernelize(
    layer = "Split",
    forward = fn apply(&self, x: &[T]) -> Result<(Vec<T>, Vec<T>), Box<dyn std::error::Error + Send + Sync>>,
    output = (x.to_vec(), x.to_vec()),
    args = (output.0, output.1, x, 2 * x.len(), None::<f32>),
)]
pub(crate) enum Split<T: kernels_runtime::ffi::Element + Default> {
    Even(std::marker::PhantomData<T>),
}

impl<T: kernels_runtime::ffi::Element + Default> Split<T> {
    fn apply(&self, x: &[T]) -> Result<(Vec<T>, Vec<T>), Box<dyn std::error::Error + Send + Sync>> {
        let half = x.len() / 2;
        Ok((x[..half].to_vec(), x[half..].to_vec()))
    }
}

fn main() {
    let split = Split::<f32>::Even(std::marker::PhantomData);
    let (a, b) = split.kernel_apply(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!((a, b), (vec![1.0, 2.0], vec![3.0, 4.0]));
}
