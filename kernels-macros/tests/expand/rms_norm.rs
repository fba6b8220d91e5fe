// One output, inputs and fields passed in order.
#[kernelize(
    layer = "RMSNorm",
    forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
    output = HostTensor::zeros(x.shape()),
    args = (output, x, self.weight, self.eps),
)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}
