// Two outputs, passed one by one; a literal among the arguments.
#[kernelize(
    layer = "AddRMSNorm",
    forward = fn forward(&self, x: &TensorView<'_>, residual: &TensorView<'_>) -> Result<(Vec<f32>, Vec<f32>), MyError>,
    output = (vec![0f32; x.numel() as usize], vec![0f32; x.numel() as usize]),
    args = (output.0, output.1, x, residual, self.weight, 1e-6),
)]
pub(crate) struct AddRmsNorm {
    weight: Vec<f32>,
}
