//! One Llama-style decoder block in candle: RMSNorm, attention with rotary embeddings and a
//! causal mask, residual add + RMSNorm, SwiGLU MLP (SiLU-and-mul), residual add.
//!
//! The three layers kernels can replace are `#[kernelize]`d; their `forward` is plain candle,
//! the reference and the fallback.

use candle_core::{D, DType, Device, Result, Tensor};
use kernels_runtime::candle::{output, output_like};
use kernels_runtime::kernelize;

/// The block's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// Width of the residual stream.
    pub(crate) hidden: usize,
    /// Attention heads (`hidden / heads` per head).
    pub(crate) heads: usize,
    /// Width of the MLP.
    pub(crate) intermediate: usize,
    /// Tokens in the sequence.
    pub(crate) seq: usize,
    /// RMSNorm epsilon.
    pub(crate) eps: f32,
    /// Rotary embedding base.
    pub(crate) rope_theta: f32,
}

impl Config {
    /// The demo's default: Llama-like proportions, small enough for a laptop CPU.
    pub(crate) const DEFAULT: Config =
        Config { hidden: 2048, heads: 16, intermediate: 5632, seq: 128, eps: 1e-5, rope_theta: 10_000.0 };

    /// Width of one head.
    pub(crate) fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// Which implementation the kernelizable layers use for one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// `kernel_forward`: the kernel `kernels.toml` maps, where one is usable.
    Kernels,
    /// `forward`: candle only.
    Reference,
}

// ---- the kernelizable layers ----------------------------------------------------------------

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * weight`.
#[kernelize(
    layer = "RMSNorm",
    forward = fn forward(&self, x: &Tensor) -> Result<Tensor>,
    output = output_like(x)?,
    args = (output, x, self.weight, self.eps),
)]
#[derive(Debug)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// The reference: candle's fused RMSNorm op.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }

    fn run(&self, x: &Tensor, path: Path) -> Result<Tensor> {
        match path {
            Path::Kernels => self.kernel_forward(x),
            Path::Reference => self.forward(x),
        }
    }
}

/// Residual add, then RMSNorm: returns `(rms_norm(x + residual), x + residual)`.
#[kernelize(
    layer = "AddRMSNorm",
    forward = fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)>,
    output = (output_like(x)?, output_like(x)?),
    args = (output.0, output.1, x, residual, self.norm.weight, self.norm.eps),
)]
#[derive(Debug)]
pub(crate) struct AddRmsNorm {
    norm: RmsNorm,
}

impl AddRmsNorm {
    /// The reference: candle's add, then its RMSNorm op.
    pub(crate) fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        let sum = (x + residual)?;
        Ok((self.norm.forward(&sum)?, sum))
    }

    fn run(&self, x: &Tensor, residual: &Tensor, path: Path) -> Result<(Tensor, Tensor)> {
        match path {
            Path::Kernels => self.kernel_forward(x, residual),
            Path::Reference => self.forward(x, residual),
        }
    }
}

/// SwiGLU's gate: `silu(x[..., :d]) * x[..., d:]` for `x` of width `2d`.
#[kernelize(
    layer = "SiluAndMul",
    forward = fn forward(&self, x: &Tensor) -> Result<Tensor>,
    output = {
        let (rows, cols) = x.dims2()?;
        output((rows, cols / 2), x.dtype(), x.device())?
    },
    args = (output, x),
)]
#[derive(Debug)]
pub(crate) struct SiluAndMul;

impl SiluAndMul {
    /// The reference: candle's SiLU, then a multiply (two passes).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(D::Minus1)? / 2;
        candle_nn::ops::silu(&x.narrow(D::Minus1, 0, d)?)? * x.narrow(D::Minus1, d, d)?
    }

    fn run(&self, x: &Tensor, path: Path) -> Result<Tensor> {
        match path {
            Path::Kernels => self.kernel_forward(x),
            Path::Reference => self.forward(x),
        }
    }
}

// ---- the block ----------------------------------------------------------------------------

/// One decoder block with deterministic random weights.
#[derive(Debug)]
pub(crate) struct Block {
    config: Config,
    input_norm: RmsNorm,
    /// `[hidden, 3 * hidden]`: q, k and v projections side by side.
    qkv: Tensor,
    /// `[hidden, hidden]`.
    out_proj: Tensor,
    post_attention_norm: AddRmsNorm,
    /// `[hidden, 2 * intermediate]`: gate and up projections side by side.
    gate_up: Tensor,
    act: SiluAndMul,
    /// `[intermediate, hidden]`.
    down: Tensor,
    /// `[seq, head_dim / 2]` each.
    cos: Tensor,
    sin: Tensor,
    /// `[seq, seq]`: 0 on and below the diagonal, -inf above.
    mask: Tensor,
}

/// SplitMix64: the weights are the same on every machine and candle version.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`.
    fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    /// `rows × cols` values uniform in `[-scale, scale)`, as a tensor.
    fn tensor(&mut self, rows: usize, cols: usize, scale: f32, dtype: DType, device: &Device) -> Result<Tensor> {
        let data: Vec<f32> = (0..rows * cols).map(|_| self.uniform(scale)).collect();
        Tensor::from_vec(data, (rows, cols), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }

    /// A norm weight: `1 ± 0.1`.
    fn norm_weight(&mut self, n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let data: Vec<f32> = (0..n).map(|_| 1.0 + self.uniform(0.1)).collect();
        Tensor::from_vec(data, n, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }
}

/// Unit-variance outputs from unit-variance inputs: uniform in `±sqrt(3 / fan_in)`.
fn projection_scale(fan_in: usize) -> f32 {
    (3.0 / fan_in as f32).sqrt()
}

impl Block {
    /// A block of `config` with weights drawn from `seed`, in `dtype` on `device`.
    pub(crate) fn new(config: Config, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let Config { hidden, intermediate, seq, eps, .. } = config;
        let mut rng = Rng(seed);
        let input_norm = RmsNorm { weight: rng.norm_weight(hidden, dtype, device)?, eps };
        let qkv = rng.tensor(hidden, 3 * hidden, projection_scale(hidden), dtype, device)?;
        let out_proj = rng.tensor(hidden, hidden, projection_scale(hidden), dtype, device)?;
        let post_attention_norm = AddRmsNorm { norm: RmsNorm { weight: rng.norm_weight(hidden, dtype, device)?, eps } };
        let gate_up = rng.tensor(hidden, 2 * intermediate, projection_scale(hidden), dtype, device)?;
        let down = rng.tensor(intermediate, hidden, projection_scale(intermediate), dtype, device)?;

        let half = config.head_dim() / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0 / config.rope_theta.powf(2.0 * i as f32 / config.head_dim() as f32)).collect();
        let angles: Vec<f32> = (0..seq).flat_map(|t| inv_freq.iter().map(move |f| t as f32 * f)).collect();
        let angles = Tensor::from_vec(angles, (seq, half), &Device::Cpu)?;
        let cos = angles.cos()?.to_dtype(dtype)?.to_device(device)?;
        let sin = angles.sin()?.to_dtype(dtype)?.to_device(device)?;
        let mask: Vec<f32> =
            (0..seq).flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (seq, seq), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;

        Ok(Block {
            config,
            input_norm,
            qkv,
            out_proj,
            post_attention_norm,
            gate_up,
            act: SiluAndMul,
            down,
            cos,
            sin,
            mask,
        })
    }

    /// An input of unit variance, `[seq, hidden]`.
    pub(crate) fn input(&self, seed: u64) -> Result<Tensor> {
        let Config { seq, hidden, .. } = self.config;
        Rng(seed).tensor(seq, hidden, 3f32.sqrt(), self.qkv.dtype(), self.qkv.device())
    }

    /// The block on `x` (`[seq, hidden]`), with the kernelizable layers on `path`.
    pub(crate) fn forward(&self, x: &Tensor, path: Path) -> Result<Tensor> {
        let h = self.input_norm.run(x, path)?;
        let attention = self.attention(&h)?;
        let (h, residual) = self.post_attention_norm.run(&attention, x, path)?;
        let gate_up = h.matmul(&self.gate_up)?;
        let act = self.act.run(&gate_up, path)?;
        residual + act.matmul(&self.down)?
    }

    /// Causal self-attention with rotary embeddings (no kernels: candle only).
    fn attention(&self, h: &Tensor) -> Result<Tensor> {
        let Config { seq, hidden, heads, .. } = self.config;
        let head_dim = self.config.head_dim();
        let qkv = h.matmul(&self.qkv)?;
        // [seq, hidden] → [1, heads, seq, head_dim]
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * hidden, hidden)?.reshape((1, seq, heads, head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = candle_nn::rotary_emb::rope(&split(0)?, &self.cos, &self.sin)?;
        let k = candle_nn::rotary_emb::rope(&split(1)?, &self.cos, &self.sin)?;
        let v = split(2)?;
        let scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?.broadcast_add(&self.mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((seq, hidden))?;
        out.matmul(&self.out_proj)
    }

    /// The inputs of each kernelizable layer on `x`, for timing the layers alone.
    pub(crate) fn layer_inputs(&self, x: &Tensor) -> Result<LayerInputs> {
        let h = self.input_norm.forward(x)?;
        let attention = self.attention(&h)?;
        let (h, _) = self.post_attention_norm.forward(&attention, x)?;
        let gate_up = h.matmul(&self.gate_up)?;
        Ok(LayerInputs { x: x.clone(), attention, gate_up })
    }

    /// Runs one kernelizable layer on its input from `inputs`.
    pub(crate) fn run_layer(&self, layer: &str, inputs: &LayerInputs, path: Path) -> Result<Tensor> {
        match layer {
            "RMSNorm" => self.input_norm.run(&inputs.x, path),
            "AddRMSNorm" => Ok(self.post_attention_norm.run(&inputs.attention, &inputs.x, path)?.0),
            "SiluAndMul" => self.act.run(&inputs.gate_up, path),
            other => candle_core::bail!("no layer {other} in the block"),
        }
    }
}

/// Calls each kernelizable layer once on a `[1 × width]` input, through its kernel where one
/// is usable, and returns the sum of the outputs' elements (so nothing is optimised away).
/// What `--once` runs: the smallest program that starts the kernels, for cold-start timing.
pub(crate) fn each_layer_once(width: usize, dtype: DType, device: &Device) -> Result<f32> {
    let mut rng = Rng(0x6F6E_6365);
    let norm = RmsNorm { weight: rng.norm_weight(width, dtype, device)?, eps: 1e-5 };
    let x = rng.tensor(1, width, 1.0, dtype, device)?;
    let residual = rng.tensor(1, width, 1.0, dtype, device)?;
    let a = norm.run(&x, Path::Kernels)?;
    let add_norm = AddRmsNorm { norm };
    let (b, sum) = add_norm.run(&x, &residual, Path::Kernels)?;
    let c = SiluAndMul.run(&x, Path::Kernels)?;
    let mut total = 0f32;
    for t in [a, b, sum, c] {
        total += t.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    }
    Ok(total)
}

/// What the kernelizable layers of a block receive for one input.
#[derive(Debug)]
pub(crate) struct LayerInputs {
    x: Tensor,
    attention: Tensor,
    gate_up: Tensor,
}

impl LayerInputs {
    /// The shape a layer's input has, for messages.
    pub(crate) fn shape_of(&self, layer: &str) -> Vec<usize> {
        match layer {
            "SiluAndMul" => self.gate_up.dims().to_vec(),
            _ => self.x.dims().to_vec(),
        }
    }
}

/// The layers the block kernelizes, in the order it runs them.
pub(crate) const LAYERS: [&str; 3] = ["RMSNorm", "AddRMSNorm", "SiluAndMul"];
