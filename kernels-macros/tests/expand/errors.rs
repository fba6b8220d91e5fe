// On errors the item is emitted unchanged, followed by every error.
#[kernelize(
    layer = "RMSNorm",
    forward = fn forward(self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
    output = HostTensor::zeros(x.shape()),
    args = (output, x, self.weigth, self.eps),
    colour = "blue",
)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}
