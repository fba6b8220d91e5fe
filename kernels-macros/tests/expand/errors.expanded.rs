pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}
::core::compile_error! {
    "unknown option `colour`; #[kernelize] takes `layer`, `forward`, `output` and `args`"
}
::core::compile_error! {
    "`forward` must take `&self`, not `self`: the kernel reads the layer's fields and the Rust forward stays callable as the reference"
}
::core::compile_error! {
    "`RmsNorm` has no field `weigth`; its fields are `weight`, `eps`"
}
